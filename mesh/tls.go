package mesh

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"math/big"
	"time"
)

// alpn names the mesh protocol in the TLS handshake.
const alpn = "meshcast-mesh/1"

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

// meshTLS returns the TLS configs of the mesh. Certificates are
// self-signed and not checked: peers prove membership with the Hello MAC
// (an HMAC keyed by the cluster secret over the session's exported keying
// material), which a peer without the secret cannot produce.
func meshTLS() (server, client *tls.Config, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "meshcast-mesh"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("mesh: certificate: %w", err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13}
	client = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13} //nolint:gosec // peers authenticate with the Hello MAC
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
