package storage

import (
	"io"
	"sync"
)

// chunkSize is the size of the pieces an archive file is encoded into.
const chunkSize = 256 << 10

// chunkPool recycles the pieces of stored files: the next file of any
// partition is encoded into them, so an archive file never grows by
// doubling (each doubling cleared new memory and copied the old, and held
// both at once: a tenth of the archiver's CPU while its files were young,
// and twice a file's size at the peak).
var chunkPool = sync.Pool{New: func() any { return new([chunkSize]byte) }}

// chunkBuf is an archive file being encoded: a list of chunkSize pieces.
// It is written once, front to back, then read (ReadAt, through
// io.NewSectionReader for the store), then released.
type chunkBuf struct {
	chunks []*[chunkSize]byte
	n      int64
}

// Write appends p.
func (c *chunkBuf) Write(p []byte) (int, error) {
	written := len(p)
	for len(p) > 0 {
		off := int(c.n % chunkSize)
		if off == 0 && c.n == int64(len(c.chunks))*chunkSize {
			c.chunks = append(c.chunks, chunkPool.Get().(*[chunkSize]byte))
		}
		k := copy(c.chunks[c.n/chunkSize][off:], p)
		p = p[k:]
		c.n += int64(k)
	}
	return written, nil
}

// Len is the number of bytes written.
func (c *chunkBuf) Len() int64 { return c.n }

// ReadAt implements io.ReaderAt over what was written.
func (c *chunkBuf) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, io.ErrUnexpectedEOF
	}
	read := 0
	for len(p) > 0 && off < c.n {
		end := min(c.n, (off/chunkSize+1)*chunkSize)
		k := copy(p, c.chunks[off/chunkSize][off%chunkSize:end-(off/chunkSize)*chunkSize])
		p = p[k:]
		off += int64(k)
		read += k
	}
	if len(p) > 0 {
		return read, io.EOF
	}
	return read, nil
}

// Reader reads the whole buffer (a ReaderAt and Seeker, as bytes.Reader).
func (c *chunkBuf) Reader() *io.SectionReader { return io.NewSectionReader(c, 0, c.n) }

// Release returns the pieces to the pool; the buffer is empty after it,
// and no reader of it may be in use.
func (c *chunkBuf) Release() {
	for i, ch := range c.chunks {
		chunkPool.Put(ch)
		c.chunks[i] = nil
	}
	c.chunks, c.n = c.chunks[:0], 0
}
