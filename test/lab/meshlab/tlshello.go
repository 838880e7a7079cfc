package meshlab

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"
)

// clientHello returns the first record a TLS 1.3 client offering ALPN h2
// sends, as an HBONE client's: its ClientHello, captured from crypto/tls
// over an in-memory pipe. Replayed, it makes a server do its half of the
// handshake (key exchange, signature) and wait for the client's.
func clientHello() ([]byte, error) {
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		cfg := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}, InsecureSkipVerify: true}
		_ = tls.Client(client, cfg).Handshake() // ends with an error when the pipe closes
	}()
	defer func() {
		server.Close()
		client.Close()
		<-done
	}()
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	header := make([]byte, 5) // type, version, length
	if _, err := io.ReadFull(server, header); err != nil {
		return nil, fmt.Errorf("capture client hello: %w", err)
	}
	body := make([]byte, binary.BigEndian.Uint16(header[3:]))
	if _, err := io.ReadFull(server, body); err != nil {
		return nil, fmt.Errorf("capture client hello: %w", err)
	}
	return append(header, body...), nil
}
