package ml

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigil/vigil/internal/testminio"
	"github.com/vigil/vigil/storage"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testminio.LeakOptions()...)
}

// clock is a process's own clock, moved by the test.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func stores(t *testing.T) map[string]storage.Store {
	local, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := testminio.Start(t)
	s3, err := storage.NewS3(context.Background(), storage.Config{Endpoint: m.Endpoint, Bucket: "lease", AccessKey: m.AccessKey, SecretKey: m.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]storage.Store{"local": local, "minio": s3}
}

// Three processes share a bucket: exactly one leads; a silent leader is
// replaced after the lease time on the challengers' own clocks (and not
// before), with a higher epoch; the old leader learns it lost; a released
// lease is taken at once.
func TestLeaseOneLeader(t *testing.T) {
	ctx := context.Background()
	const ttl = 10 * time.Second
	for name, st := range stores(t) {
		t.Run(name, func(t *testing.T) {
			// the three clocks disagree by minutes: nothing compares them
			clocks := []*clock{{time.Unix(1000, 0)}, {time.Unix(5000, 0)}, {time.Unix(90, 0)}}
			ls := make([]*Lease, 3)
			for i := range ls {
				ls[i] = NewLease(st, []string{"eu-1", "us-1", "ap-1"}[i], ttl)
				ls[i].now = clocks[i].now
			}
			leaders := func() (n int, who int, epoch int64) {
				who = -1
				for i, l := range ls {
					if ok, e := l.Leading(); ok {
						n, who, epoch = n+1, i, e
					}
				}
				return
			}
			tickAll := func(skip int) {
				for i, l := range ls {
					if i == skip {
						continue
					}
					if _, err := l.Tick(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			tickAll(-1)
			n, first, epoch := leaders()
			if n != 1 || epoch != 1 {
				t.Fatalf("%d leaders at epoch %d, want 1 at epoch 1", n, epoch)
			}
			// the leader renews; the others watch for longer than a TTL in total
			for step := 0; step < 10; step++ {
				for _, c := range clocks {
					c.t = c.t.Add(3 * time.Second)
				}
				tickAll(-1)
				if n, who, _ := leaders(); n != 1 || who != first {
					t.Fatalf("step %d: %d leaders (%d), want only %d", step, n, who, first)
				}
			}
			// the leader goes silent (killed); just under a TTL later nobody takes over
			for _, c := range clocks {
				c.t = c.t.Add(ttl - time.Second)
			}
			tickAll(first)
			tickAll(first) // two looks, same ETag
			for i, l := range ls {
				if ok, _ := l.Leading(); ok && i != first {
					t.Fatalf("process %d took over before the lease time", i)
				}
			}
			for _, c := range clocks {
				c.t = c.t.Add(2 * time.Second)
			}
			tickAll(first)
			next := -1
			for i, l := range ls {
				if ok, e := l.Leading(); ok && i != first {
					if next >= 0 || e != 2 {
						t.Fatalf("takeover: process %d at epoch %d (another already %d)", i, e, next)
					}
					next = i
				}
			}
			if next < 0 {
				t.Fatal("nobody took over after the lease time")
			}
			// the old leader wakes up: its renewal fails and it stops leading
			if ok, err := ls[first].Tick(ctx); ok || err != nil {
				t.Fatalf("stale leader still leads (%v, %v)", ok, err)
			}
			if n, who, e := leaders(); n != 1 || who != next || e != 2 {
				t.Fatalf("after the stale leader woke: %d leaders, %d at epoch %d", n, who, e)
			}
			// a graceful stop releases the lease: a successor takes it at once
			if err := ls[next].Release(ctx); err != nil {
				t.Fatal(err)
			}
			tickAll(next)
			if n, who, e := leaders(); n != 1 || who == next || e != 3 {
				t.Fatalf("after release: %d leaders, %d at epoch %d", n, who, e)
			}
		})
	}
}

// A store that ignores conditions: Vigil refuses to lead on it and says why.
type unconditional struct{ storage.Store }

func (u unconditional) PutIfAbsent(ctx context.Context, k string, r io.Reader, n int64) (string, error) {
	return u.Put(ctx, k, r, n)
}

func (u unconditional) PutIfMatch(ctx context.Context, k string, r io.Reader, n int64, _ string) (string, error) {
	return u.Put(ctx, k, r, n)
}

func TestLeaseRefusesWithoutConditionalWrites(t *testing.T) {
	local, _ := storage.NewLocal(t.TempDir())
	l := NewLease(unconditional{local}, "eu-1", time.Second)
	ok, err := l.Tick(context.Background())
	if ok || !errors.Is(err, ErrNoConditionalWrites) {
		t.Fatalf("lead on a store without conditional writes: %v %v", ok, err)
	}
	if err := CheckConditionalWrites(context.Background(), local); err != nil {
		t.Fatalf("the local store honours conditional writes: %v", err)
	}
}
