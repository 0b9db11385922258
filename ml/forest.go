package ml

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/vigil/vigil/storage"
)

// Forest is a trained tree ensemble compiled to one flat array of nodes
// for the hot path: node i splits on feature Node[i].Feat at Node[i].Thr
// (x <= Thr goes Left, as golearn does), and a node with Feat < 0 is a
// leaf whose value is Thr. A node is 20 bytes, so each step of a walk
// touches one cache line; scoring allocates nothing.
//
// Kind "iforest": the value of a tree is the path length (one per split
// node passed, plus the leaf's value, golearn's c(n) correction), and the
// score is 2^(-mean path / Norm), golearn's anomaly score.
// Kind "randomforest": a leaf's value is 1 for the anomaly class and 0 for
// normal, and the score is the share of trees voting anomaly.
type Forest struct {
	Kind  string
	NFeat int     // length of the input vector
	Norm  float64 // iforest: c(subsample size)
	Roots []int32
	Node  []Node
}

// Node is one node of a compiled tree.
type Node struct {
	Thr         float64
	Feat        int32
	Left, Right int32
}

// Kinds of compiled forest.
const (
	KindIsolation = "iforest"
	KindRandom    = "randomforest"
)

// Score scores one feature vector (len(x) must be NFeat).
func (f *Forest) Score(x []float64) float64 {
	nodes := f.Node
	x = x[:f.NFeat]
	var sum, steps float64
	roots := f.Roots
	// Four trees are walked together: each step is a dependent load, and
	// four independent chains keep the memory system busy while each waits
	// (about twice as fast as one tree at a time).
	for len(roots) >= 4 {
		a, b, c, d := &nodes[roots[0]], &nodes[roots[1]], &nodes[roots[2]], &nodes[roots[3]]
		for a.Feat >= 0 && b.Feat >= 0 && c.Feat >= 0 && d.Feat >= 0 {
			steps += 4
			a = &nodes[a.Left+b2i(x[a.Feat] > a.Thr)]
			b = &nodes[b.Left+b2i(x[b.Feat] > b.Thr)]
			c = &nodes[c.Left+b2i(x[c.Feat] > c.Thr)]
			d = &nodes[d.Left+b2i(x[d.Feat] > d.Thr)]
		}
		for _, nd := range [4]*Node{a, b, c, d} {
			for nd.Feat >= 0 {
				steps++
				nd = &nodes[nd.Left+b2i(x[nd.Feat] > nd.Thr)]
			}
			sum += nd.Thr
		}
		roots = roots[4:]
	}
	for _, root := range roots {
		nd := &nodes[root]
		for nd.Feat >= 0 {
			steps++
			// children are adjacent (Right = Left + 1)
			nd = &nodes[nd.Left+b2i(x[nd.Feat] > nd.Thr)]
		}
		sum += nd.Thr
	}
	if f.Kind == KindIsolation {
		// mean path = (split nodes passed + leaf corrections) / trees
		return math.Exp2(-(steps + sum) / float64(len(f.Roots)) / f.Norm)
	}
	return sum / float64(len(f.Roots))
}

func b2i(b bool) int32 {
	if b {
		return 1
	}
	return 0
}

// Nodes is the number of nodes of every tree together.
func (f *Forest) Nodes() int { return len(f.Node) }

// reserve appends n empty nodes and returns the index of the first.
func (f *Forest) reserve(n int) int32 {
	i := int32(len(f.Node))
	for k := 0; k < n; k++ {
		f.Node = append(f.Node, Node{Feat: -1, Left: -1, Right: -1})
	}
	return i
}

// Binary form: "VGLFRST1", kind length + kind, then little-endian u32
// NFeat, f64 Norm, u32 trees, u32 nodes, the roots, then per node i32 feat,
// f64 thr, i32 left, i32 right. It is written and read through buffers of
// a few KB, so a large model is never held twice in memory.
var forestMagic = [8]byte{'V', 'G', 'L', 'F', 'R', 'S', 'T', '1'}

// WriteTo writes the forest's binary form.
func (f *Forest) WriteTo(w io.Writer) (int64, error) {
	cw := &storage.CountingWriter{W: w}
	bw := bufio.NewWriterSize(cw, 64<<10)
	le := binary.LittleEndian
	var b [24]byte
	// bufio.Writer keeps its first error and returns it from every later
	// call and from Flush, so checking the last write and Flush is enough
	_, _ = bw.Write(forestMagic[:])
	_ = bw.WriteByte(byte(len(f.Kind)))
	_, _ = bw.WriteString(f.Kind)
	le.PutUint32(b[0:], uint32(f.NFeat))
	le.PutUint64(b[4:], math.Float64bits(f.Norm))
	le.PutUint32(b[12:], uint32(len(f.Roots)))
	le.PutUint32(b[16:], uint32(len(f.Node)))
	_, _ = bw.Write(b[:20])
	for _, r := range f.Roots {
		le.PutUint32(b[:], uint32(r))
		_, _ = bw.Write(b[:4])
	}
	for _, nd := range f.Node {
		le.PutUint32(b[0:], uint32(nd.Feat))
		le.PutUint64(b[4:], math.Float64bits(nd.Thr))
		le.PutUint32(b[12:], uint32(nd.Left))
		le.PutUint32(b[16:], uint32(nd.Right))
		if _, err := bw.Write(b[:20]); err != nil {
			return cw.N, err
		}
	}
	err := bw.Flush()
	return cw.N, err
}

// maxForestNodes bounds what ReadForest accepts (about 1.4 GB of arrays).
const maxForestNodes = 1 << 26

// ReadForest reads a forest written by WriteTo and checks that every node
// points inside the arrays, so a damaged file cannot make Score panic.
func ReadForest(r io.Reader) (*Forest, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	le := binary.LittleEndian
	var magic [8]byte
	if _, err := io.ReadFull(br, magic[:]); err != nil {
		return nil, fmt.Errorf("read model header: %w", err)
	}
	if magic != forestMagic {
		return nil, errors.New("not a Vigil forest model (bad magic)")
	}
	kl, err := br.ReadByte()
	if err != nil {
		return nil, fmt.Errorf("read model header: %w", err)
	}
	kind := make([]byte, kl)
	var hdr [20]byte
	if _, err := io.ReadFull(br, kind); err != nil {
		return nil, fmt.Errorf("read model header: %w", err)
	}
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, fmt.Errorf("read model header: %w", err)
	}
	f := &Forest{Kind: string(kind), NFeat: int(le.Uint32(hdr[0:])), Norm: math.Float64frombits(le.Uint64(hdr[4:]))}
	if f.Kind != KindIsolation && f.Kind != KindRandom {
		return nil, fmt.Errorf("unknown forest kind %q", f.Kind)
	}
	if f.NFeat < 1 || f.NFeat > 1<<20 {
		return nil, fmt.Errorf("model reads %d features: damaged", f.NFeat)
	}
	nt, nn := le.Uint32(hdr[12:]), le.Uint32(hdr[16:])
	if nt == 0 || nn == 0 || nn > maxForestNodes || nt > nn {
		return nil, fmt.Errorf("model has %d trees and %d nodes: damaged", nt, nn)
	}
	// the slices grow as the data arrives: a damaged header cannot make
	// the reader allocate gigabytes for a short file
	f.Roots = make([]int32, 0, min(nt, 1<<16))
	for i := uint32(0); i < nt; i++ {
		if _, err := io.ReadFull(br, hdr[:4]); err != nil {
			return nil, fmt.Errorf("read model roots: %w", err)
		}
		f.Roots = append(f.Roots, int32(le.Uint32(hdr[:4])))
	}
	f.Node = make([]Node, 0, min(nn, 1<<16))
	for i := uint32(0); i < nn; i++ {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return nil, fmt.Errorf("read model node %d of %d: %w", i, nn, err)
		}
		f.Node = append(f.Node, Node{Feat: int32(le.Uint32(hdr[0:])), Thr: math.Float64frombits(le.Uint64(hdr[4:])),
			Left: int32(le.Uint32(hdr[12:])), Right: int32(le.Uint32(hdr[16:]))})
	}
	return f, f.check()
}

// check verifies that every root and child index is in range, that split
// features are inside the vector, and that the trees have no cycles
// (children come after their parent, and Right = Left + 1, as compile
// writes them).
func (f *Forest) check() error {
	n := int32(len(f.Node))
	for _, r := range f.Roots {
		if r < 0 || r >= n {
			return fmt.Errorf("model root %d out of range", r)
		}
	}
	for i, nd := range f.Node {
		if nd.Feat < 0 {
			continue
		}
		if int(nd.Feat) >= f.NFeat {
			return fmt.Errorf("model node %d splits on feature %d of %d", i, nd.Feat, f.NFeat)
		}
		if nd.Left <= int32(i) || nd.Right != nd.Left+1 || nd.Right >= n {
			return fmt.Errorf("model node %d has children out of order", i)
		}
	}
	return nil
}
