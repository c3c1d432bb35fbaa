package edge

import (
	"errors"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/webtransport-go"
)

// datagramSender is a transport that sends datagrams (WebTransport).
type datagramSender interface {
	sendDatagram(d []byte) error
}

// sendDatagrams sends what the datagram lane held: each entry is a
// WebTransport stream frame of a binary broadcast, whose body is the
// datagram. One too large for the QUIC path goes on the stream instead.
// Only the writer calls it.
func (c *conn) sendDatagrams(ds [][]byte) error {
	m := c.srv.metrics
	for _, f := range ds {
		err := c.dg.sendDatagram(f[wtHeader:])
		var tooLarge *quic.DatagramTooLargeError
		switch {
		case err == nil:
			m.datagramsSent.Inc()
		case errors.As(err, &tooLarge):
			m.datagramsOnStream.Inc()
			if err := c.tr.writeFrames([][]byte{f}); err != nil {
				return err
			}
		default:
			// The session is ending; the stream write will tell.
			m.datagramDropped("closed")
		}
	}
	return nil
}

// readDatagrams reads the session's datagrams until it ends.
func (c *conn) readDatagrams(sess *webtransport.Session) {
	for {
		d, err := sess.ReceiveDatagram(sess.Context())
		if err != nil {
			return
		}
		c.handleDatagram(d)
	}
}

// handleDatagram handles one datagram from the client.
func (c *conn) handleDatagram(d []byte) {
	c.srv.metrics.datagramsReceived.Inc()
	c.srv.metrics.datagramDropped("not_enabled")
}
