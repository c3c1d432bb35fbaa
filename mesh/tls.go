package mesh

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// alpn names the mesh protocol in the TLS handshake; /2 authenticates
// peers in TLS (mutual, with the key derived from the cluster secret),
// which nodes speaking /1 cannot.
const alpn = "meshcast-mesh/2"

// ekmLabel is the exporter label of the keying material that binds a Hello
// to its TLS session, so a captured Hello cannot be replayed on another
// connection.
const ekmLabel = "EXPORTER-meshcast-mesh-hello"

// Roles in the Hello MAC, so that a dialer's Hello cannot be reflected back
// as the acceptor's answer.
const (
	roleDialer   byte = 'D'
	roleAcceptor byte = 'A'
)

// errPeerKey is a TLS peer that did not prove it holds the mesh key.
var errPeerKey = errors.New("mesh: TLS peer does not hold the cluster's mesh key")

// meshTLS returns the TLS configs of the mesh. Every node's certificate
// carries the same Ed25519 key, derived from the cluster secret, and each
// side of a handshake requires the other's to carry it: TLS 1.3 makes the
// peer sign the handshake with it, so a peer without the secret fails the
// handshake itself and never gets a stream (or a byte of flow-control
// window) to send on. refused is called for each client the server turns
// away that way. The Hello that follows binds the connection to a node ID
// and incarnation.
func meshTLS(secret []byte, refused func(remote net.Addr, err error)) (server, client *tls.Config, err error) {
	key := ed25519.NewKeyFromSeed(deriveKey(secret, "mesh-tls"))
	pub := key.Public().(ed25519.PublicKey)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "meshcast-mesh"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, nil, fmt.Errorf("mesh: certificate: %w", err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errPeerKey
		}
		if k, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey); !ok || !k.Equal(pub) {
			return errPeerKey
		}
		return nil
	}
	base := &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{alpn},
		MinVersion:   tls.VersionTLS13,
		// Request, not require: a client without a certificate then reaches
		// VerifyConnection, where it is counted like one with a wrong key.
		ClientAuth: tls.RequestClientCert,
		// No resumption: every handshake proves the key again.
		SessionTicketsDisabled: true,
	}
	server = &tls.Config{
		NextProtos: base.NextProtos,
		MinVersion: base.MinVersion,
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			var remote net.Addr
			if chi.Conn != nil {
				remote = chi.Conn.RemoteAddr()
			}
			c := base.Clone()
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				err := verify(cs)
				if err != nil && refused != nil {
					refused(remote, err)
				}
				return err
			}
			return c, nil
		},
	}
	client = &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{alpn},
		MinVersion:   tls.VersionTLS13,
		// The chain is not checked: VerifyConnection checks the key.
		InsecureSkipVerify: true, //nolint:gosec // the peer's key is checked in VerifyConnection
		VerifyConnection:   verify,
	}
	return server, client, nil
}

// helloMAC computes the MAC a Hello carries.
func helloMAC(key []byte, role, lane byte, nodeID string, incarnation uint64, ekm []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("meshcast-hello-v1"))
	m.Write([]byte{role, lane})
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], incarnation)
	m.Write(n[:])
	m.Write([]byte(nodeID))
	m.Write(ekm)
	return m.Sum(nil)
}
