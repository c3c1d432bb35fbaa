package edge

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"testing"
	"time"
)

func TestCertRotationSchedule(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	const day = 24 * time.Hour
	s, err := newSelfSignedCerts(10*day, func() time.Time { return t0 })
	if err != nil {
		t.Fatal(err)
	}
	serving := func() [32]byte {
		c, _ := s.getCertificate(nil)
		return sha256.Sum256(c.Certificate[0])
	}
	a := serving()
	check := func(at time.Time, wantNext time.Time, wantServing [32]byte, wantHashes ...[32]byte) {
		t.Helper()
		next, err := s.rotate(at)
		if err != nil {
			t.Fatal(err)
		}
		if !next.Equal(wantNext) {
			t.Errorf("at %v: next rotation %v, want %v", at.Sub(t0), next.Sub(t0), wantNext.Sub(t0))
		}
		if got := serving(); got != wantServing {
			t.Errorf("at %v: serving another certificate than expected", at.Sub(t0))
		}
		hashes, _ := s.published()
		if len(hashes) != len(wantHashes) {
			t.Fatalf("at %v: %d hashes published, want %d", at.Sub(t0), len(hashes), len(wantHashes))
		}
		for i := range hashes {
			if hashes[i] != wantHashes[i] {
				t.Errorf("at %v: hash %d differs", at.Sub(t0), i)
			}
		}
	}
	// Serves A for half its validity; an hour before the switch B is
	// published beside it, then B serves alone.
	check(t0, t0.Add(5*day-time.Hour), a, a)
	check(t0.Add(4*day), t0.Add(5*day-time.Hour), a, a)
	s.rotate(t0.Add(5*day - time.Hour))
	hashes, _ := s.published()
	if len(hashes) != 2 || hashes[0] != a {
		t.Fatalf("%d hashes before the switch, want the current and the next", len(hashes))
	}
	b := hashes[1]
	check(t0.Add(5*day-time.Minute), t0.Add(5*day), a, a, b)
	check(t0.Add(5*day), t0.Add(10*day-time.Hour), b, b)
	// A node stopped past its switch serves a fresh certificate at once.
	late := t0.Add(40 * day)
	if _, err := s.rotate(late); err != nil {
		t.Fatal(err)
	}
	if c := serving(); c == a || c == b {
		t.Fatal("a stale certificate still serves")
	}
	c, _ := s.getCertificate(nil)
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.NotBefore.Before(late) || !leaf.NotAfter.After(late) {
		t.Fatalf("fresh certificate valid %v..%v, not at %v", leaf.NotBefore, leaf.NotAfter, late)
	}
}

// TestCertIsWhatChromiumPins: ECDSA P-256 and valid for less than 14 days
// (Chromium refuses RSA and 14.05 days).
func TestCertIsWhatChromiumPins(t *testing.T) {
	s, err := newSelfSignedCerts(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := s.getCertificate(nil)
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if v := leaf.NotAfter.Sub(leaf.NotBefore); v != DefaultCertValidity || v >= MaxCertValidity {
		t.Fatalf("validity %v, want %v", v, DefaultCertValidity)
	}
	if !leaf.NotBefore.Before(time.Now()) {
		t.Fatalf("not valid yet: %v", leaf.NotBefore)
	}
	hashes, notAfter := s.published()
	if len(hashes) != 1 || hashes[0] != sha256.Sum256(leaf.Raw) || !notAfter.Equal(leaf.NotAfter) {
		t.Fatal("published hash or not_after is not the leaf's")
	}
	if _, err := newSelfSignedCerts(MaxCertValidity, nil); err == nil {
		t.Fatal("a validity of 14 days was accepted")
	}
}

func TestFixedCertPublishesNoHashes(t *testing.T) {
	gen, err := newSelfSignedCerts(time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := gen.getCertificate(nil)
	s, err := newFixedCerts(c)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.getCertificate(nil); got != c {
		t.Fatal("not serving the configured certificate")
	}
	hashes, notAfter := s.published()
	if len(hashes) != 0 || notAfter.IsZero() {
		t.Fatalf("hashes %d, not_after %v: a CA certificate publishes no hashes but its expiry", len(hashes), notAfter)
	}
}
