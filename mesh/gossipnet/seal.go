package gossipnet

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
)

// memberlist's encryption format (v0.7.0, security.go and net.go), which
// this package checks but never produces: memberlist seals and opens
// every message itself, and these checks only decide what it gets to see.
//
// A packet is sealed whole: [version 0|1][nonce 12][AES-GCM ciphertext and
// tag 16], with no additional data when no label is configured (meshcast
// sets none). A stream starts with [encryptMsg][length uint32] and that
// many bytes sealed the same way, those five bytes being the additional
// data. Version 1 is what memberlist sends at protocol version 2 and up;
// version 0 (protocol 1) pads the plaintext, which the check ignores.
const (
	encryptMsg  = 10 // memberlist's messageType for a sealed stream message
	versionSize = 1
	nonceSize   = 12
	tagSize     = 16
	minSealed   = versionSize + nonceSize + tagSize
	// streamHeader is the type byte and the length of a stream message.
	streamHeader = 5
)

// opener checks that messages were sealed with the gossip key. It is not
// safe for concurrent use: each goroutine holds its own.
type opener struct {
	gcm     cipher.AEAD
	scratch []byte
}

func newOpener(key []byte) (*opener, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("gossipnet: gossip key: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &opener{gcm: gcm}, nil
}

// sealed reports whether msg opens with the key and additional data ad.
func (o *opener) sealed(msg, ad []byte) bool {
	if len(msg) < minSealed || msg[0] > 1 {
		return false
	}
	ct := msg[versionSize+nonceSize:]
	if cap(o.scratch) < len(ct) {
		o.scratch = make([]byte, len(ct))
	}
	_, err := o.gcm.Open(o.scratch[:0], msg[versionSize:versionSize+nonceSize], ct, ad)
	return err == nil
}
