package edge

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sync"
	"time"
)

// MaxCertValidity is the longest validity Chromium accepts for a
// certificate pinned with serverCertificateHashes (measured: 14.00 days
// pass, 14.05 fail). Generated certificates stay below it.
const MaxCertValidity = 14 * 24 * time.Hour

// DefaultCertValidity is the validity of a generated certificate.
const DefaultCertValidity = 13 * 24 * time.Hour

// certSchedule decides which self-signed certificate a node serves and
// publishes, as a pure function of time (no clock or goroutine inside, so
// rotation is table-tested). Each certificate is valid for validity. It
// serves new handshakes for half of that, so a session may start on it
// until it has half its life left; lead before the switch, the next one is
// made and its hash published next to the current one, so a client holding
// a freshly fetched list still connects after the switch.
type certSchedule struct {
	validity time.Duration
}

// every is how long a certificate serves new handshakes.
func (s certSchedule) every() time.Duration { return s.validity / 2 }

// lead is how long before the switch the next certificate is published.
func (s certSchedule) lead() time.Duration { return min(time.Hour, s.validity/10) }

// skew is how far before its creation a certificate's NotBefore lies, for
// clients whose clock is a little behind; NotAfter - NotBefore = validity.
func (s certSchedule) skew() time.Duration { return min(time.Minute, s.validity/20) }

// issuedCert is one generated (or configured) certificate.
type issuedCert struct {
	cert     *tls.Certificate
	hash     [sha256.Size]byte // of the leaf's DER
	notAfter time.Time
	serves   time.Time // when it starts serving new handshakes
}

// certSource gives the WebTransport listener its certificate: the
// configured one, or self-signed ones it rotates without dropping
// sessions (a handshake gets whatever is current; established sessions do
// not look at certificates again).
type certSource struct {
	fixed *issuedCert // --tls-cert: served as is, no hashes published
	sched certSchedule
	now   func() time.Time

	mu      sync.Mutex
	current *issuedCert
	next    *issuedCert // published, not serving yet
}

func newFixedCerts(c *tls.Certificate) (*certSource, error) {
	if len(c.Certificate) == 0 {
		return nil, errors.New("edge: WebTransport certificate has no leaf")
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("edge: WebTransport certificate: %w", err)
	}
	ic := &issuedCert{cert: c, hash: sha256.Sum256(c.Certificate[0]), notAfter: leaf.NotAfter}
	return &certSource{fixed: ic, current: ic}, nil
}

func newSelfSignedCerts(validity time.Duration, now func() time.Time) (*certSource, error) {
	if validity <= 0 {
		validity = DefaultCertValidity
	}
	if validity >= MaxCertValidity {
		return nil, fmt.Errorf("edge: WebTransport certificate validity %v: browsers refuse pinned certificates valid %v or longer", validity, MaxCertValidity)
	}
	if now == nil {
		now = time.Now
	}
	s := &certSource{sched: certSchedule{validity: validity}, now: now}
	t := now()
	c, err := s.sched.issue(t, t)
	if err != nil {
		return nil, err
	}
	s.current = c
	return s, nil
}

// getCertificate is tls.Config.GetCertificate.
func (s *certSource) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current.cert, nil
}

// published returns the hashes clients may pin (current first, then the
// next one once it is published) and the current certificate's NotAfter.
// A configured certificate publishes no hashes: browsers verify it
// against their roots.
func (s *certSource) published() (hashes [][sha256.Size]byte, notAfter time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fixed != nil {
		return nil, s.fixed.notAfter
	}
	hashes = append(hashes, s.current.hash)
	if s.next != nil {
		hashes = append(hashes, s.next.hash)
	}
	return hashes, s.current.notAfter
}

// rotate brings the certificates up to date at now and returns when it
// must run again. Only the rotation goroutine (or a test) calls it.
func (s *certSource) rotate(now time.Time) (time.Time, error) {
	s.mu.Lock()
	cur, next := s.current, s.next
	s.mu.Unlock()
	switchAt := cur.serves.Add(s.sched.every())
	switch {
	case !now.Before(switchAt) && next != nil:
		cur, next = next, nil
	case !now.Before(switchAt):
		// Missed the publication (the process was stopped): serve a
		// fresh one at once.
		c, err := s.sched.issue(now, now)
		if err != nil {
			return now.Add(time.Minute), err
		}
		cur = c
	case next == nil && !now.Before(switchAt.Add(-s.sched.lead())):
		c, err := s.sched.issue(now, switchAt)
		if err != nil {
			return now.Add(time.Minute), err
		}
		next = c
	}
	s.mu.Lock()
	s.current, s.next = cur, next
	s.mu.Unlock()
	switchAt = cur.serves.Add(s.sched.every())
	if next == nil {
		return switchAt.Add(-s.sched.lead()), nil
	}
	return switchAt, nil
}

// issue makes a self-signed ECDSA P-256 certificate created at now that
// starts serving at serves.
func (sc certSchedule) issue(now, serves time.Time) (*issuedCert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("edge: WebTransport certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	notBefore := now.Add(-sc.skew()).Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "meshcast WebTransport (self-signed, pinned by hash)"},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(sc.validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("edge: WebTransport certificate: %w", err)
	}
	return &issuedCert{
		cert:     &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		hash:     sha256.Sum256(der),
		notAfter: tmpl.NotAfter,
		serves:   serves,
	}, nil
}

// run rotates until stop is closed.
func (s *certSource) run(stop <-chan struct{}, onErr func(error)) {
	if s.fixed != nil {
		return
	}
	for {
		at, err := s.rotate(s.now())
		if err != nil {
			onErr(err)
		}
		t := time.NewTimer(max(time.Until(at), 10*time.Millisecond))
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}
