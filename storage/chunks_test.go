package storage

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// A chunkBuf reads back, whole and at any offset, what was written in
// pieces of any size, across chunk boundaries; released and written
// again, it shows nothing of before.
func TestChunkBuf(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var c chunkBuf
	for _, size := range []int{0, 1, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 17, 10 << 20} {
		var want bytes.Buffer
		for want.Len() < size {
			p := make([]byte, min(size-want.Len(), 1+rng.IntN(3*chunkSize/2)))
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			if n, err := c.Write(p); n != len(p) || err != nil {
				t.Fatalf("Write of %d bytes: %d, %v", len(p), n, err)
			}
			want.Write(p)
		}
		if c.Len() != int64(size) {
			t.Fatalf("Len %d after writing %d bytes", c.Len(), size)
		}
		got, err := io.ReadAll(c.Reader())
		if err != nil || !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("size %d: read back %d bytes (err %v), want the %d written", size, len(got), err, want.Len())
		}
		for range 20 {
			if size == 0 {
				break
			}
			off := rng.Int64N(int64(size))
			p := make([]byte, rng.IntN(2*chunkSize))
			n, err := c.ReadAt(p, off)
			wantN := min(len(p), size-int(off))
			if n != wantN || !bytes.Equal(p[:n], want.Bytes()[off:int(off)+n]) || (n < len(p)) != errors.Is(err, io.EOF) {
				t.Fatalf("size %d: ReadAt(%d bytes, %d) = %d, %v; want %d bytes of the data", size, len(p), off, n, err, wantN)
			}
		}
		c.Release()
		if c.Len() != 0 {
			t.Fatalf("Len %d after Release", c.Len())
		}
	}
}

// BenchmarkFileBuffer encodes a 16 MiB file in 8 KiB writes into a
// bytes.Buffer grown from empty (before) and into pooled chunks.
func BenchmarkFileBuffer(b *testing.B) {
	p := make([]byte, 8<<10)
	const size = 16 << 20
	b.Run("bytes.Buffer", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			var buf bytes.Buffer
			for buf.Len() < size {
				buf.Write(p)
			}
		}
	})
	b.Run("chunkBuf", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			var c chunkBuf
			for c.Len() < size {
				_, _ = c.Write(p)
			}
			c.Release()
		}
	})
}
