package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Wire formats, both big-endian:
//
// Echo (latency): every message is a frame, a 4-byte length L followed by L
// payload bytes, L <= MaxFrame. The server writes each frame back unchanged.
// The client's payload starts with an 8-byte sequence number and is filled
// with a pattern derived from it, so a corrupted or reordered echo is caught.
//
// Bulk (throughput): the client sends an 8-byte count N (<= MaxBulk), then N
// bytes. The server discards them and, once all N have arrived, answers with
// the 8-byte count it received. The client's clock stops at that answer.
const (
	// MaxFrame is the largest echo payload either side accepts.
	MaxFrame = 1 << 20
	// MinFrame is the smallest echo payload the client sends (its sequence number).
	MinFrame = 8
	// MaxBulk is the largest bulk transfer the server accepts.
	MaxBulk = 64 << 30
)

var errFrameTooLarge = errors.New("frame too large")

// readFrame reads one echo frame into buf (grown if needed) and returns the
// payload.
func readFrame(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrame {
		return nil, fmt.Errorf("read frame of %d bytes: %w", n, errFrameTooLarge)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("read frame body: %w", noEOF(err))
	}
	return buf, nil
}

// writeFrame writes payload as one echo frame.
func writeFrame(w io.Writer, payload []byte) error {
	if len(payload) > MaxFrame {
		return fmt.Errorf("write frame of %d bytes: %w", len(payload), errFrameTooLarge)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(payload)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// fillPayload writes seq and its pattern into p (len(p) >= MinFrame).
func fillPayload(p []byte, seq uint64) {
	binary.BigEndian.PutUint64(p, seq)
	for i := MinFrame; i < len(p); i++ {
		p[i] = byte(seq) + byte(i)
	}
}

// checkPayload returns the sequence number in p and whether the rest of p
// is the pattern fillPayload writes for it.
func checkPayload(p []byte) (uint64, bool) {
	if len(p) < MinFrame {
		return 0, false
	}
	seq := binary.BigEndian.Uint64(p)
	for i := MinFrame; i < len(p); i++ {
		if p[i] != byte(seq)+byte(i) {
			return seq, false
		}
	}
	return seq, true
}

// readCount reads a bulk count (the request header or the server's answer).
func readCount(r io.Reader) (int64, error) {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint64(b[:])
	if n > MaxBulk {
		return 0, fmt.Errorf("bulk count %d over %d", n, int64(MaxBulk))
	}
	return int64(n), nil
}

// writeCount writes a bulk count.
func writeCount(w io.Writer, n int64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	_, err := w.Write(b[:])
	return err
}

// noEOF turns an EOF in the middle of a message into ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
