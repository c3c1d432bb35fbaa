package gossipnet

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"testing"

	"github.com/meshcast/meshcast/wire/fuzzcorpus"
)

// FuzzFirstMessage: whatever a stream sends, its check ends with a
// reason or with the message whole, never reads past what the message
// announced, and passes nothing not sealed with the key.
func FuzzFirstMessage(f *testing.F) {
	f.Add(sealedStream(f, testKey, []byte("push-pull state")))
	f.Add([]byte{encryptMsg, 0x01, 0x40, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		tr := &Transport{cfg: Config{Key: testKey, MaxStreamBytes: 1 << 12}}
		r := bytes.NewReader(in)
		msg, reason, _ := tr.readFirst(r)
		if reason != "" {
			return
		}
		if !bytes.HasPrefix(in, msg) || len(msg) < streamHeader+minSealed {
			t.Fatalf("passed %d bytes that are not the input's first message", len(msg))
		}
		op, _ := newOpener(testKey)
		if !op.sealed(msg[streamHeader:], msg[:streamHeader]) {
			t.Fatal("passed a message that does not open with the key")
		}
	})
}

// FuzzPacket: a datagram passes exactly when memberlist would open it:
// version 0 or 1, then a nonce and an AES-GCM ciphertext that opens with
// the key (checked here with a cipher of its own).
func FuzzPacket(f *testing.F) {
	f.Add(seal(f, testKey, []byte("ping"), nil))
	f.Add([]byte{1})
	block, _ := aes.NewCipher(testKey)
	gcm, _ := cipher.NewGCM(block)
	f.Fuzz(func(t *testing.T, in []byte) {
		op, _ := newOpener(testKey)
		got := op.sealed(in, nil)
		want := len(in) >= minSealed && in[0] <= 1
		if want {
			_, err := gcm.Open(nil, in[1:13], in[13:], nil)
			want = err == nil
		}
		if got != want {
			t.Fatalf("sealed = %v for %x, want %v", got, in, want)
		}
	})
}

// TestWriteCorpus writes the seed corpora: a sealed stream message and
// datagram as memberlist sends them, and junk of their shape.
func TestWriteCorpus(t *testing.T) {
	fuzzcorpus.Skip(t)
	fuzzcorpus.Write(t, "FuzzFirstMessage", "sealed", sealedStream(t, testKey, []byte("push-pull state")))
	fuzzcorpus.Write(t, "FuzzFirstMessage", "claims-20MiB", []byte{encryptMsg, 0x01, 0x40, 0, 0})
	fuzzcorpus.Write(t, "FuzzFirstMessage", "other-key", sealedStream(t, bytes.Repeat([]byte{9}, 32), []byte("state")))
	fuzzcorpus.Write(t, "FuzzPacket", "sealed", seal(t, testKey, []byte("ping"), nil))
	fuzzcorpus.Write(t, "FuzzPacket", "shaped", append([]byte{1}, bytes.Repeat([]byte{7}, 60)...))
}
