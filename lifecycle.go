package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// conductor runs the components of `vigil serve`, each on a context of its
// own, and stops them in phases, in the order that loses nothing: HTTP
// stops taking requests, ingest flushes what it accepted, the stream
// commits its last micro-batch, the archiver flushes, the trainer lease is
// released, the readers stop, then the broker. The phases share one budget
// (shutdown.budget); each is logged with its duration.
type conductor struct {
	log    *zap.Logger
	failed chan error // the first component that stopped by itself
	comps  map[string]*component
}

type component struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func newConductor(log *zap.Logger) *conductor {
	return &conductor{log: log, failed: make(chan error, 1), comps: map[string]*component{}}
}

// start runs fn until its component is stopped. A component that returns
// before that (an error, or nil) starts the shutdown.
func (c *conductor) start(name string, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	comp := &component{name: name, cancel: cancel, done: make(chan struct{})}
	c.comps[name] = comp
	go func() {
		defer close(comp.done)
		comp.err = fn(ctx)
		if ctx.Err() == nil { // stopped by itself
			err := comp.err
			if err == nil {
				err = errors.New("stopped unexpectedly")
			}
			select {
			case c.failed <- fmt.Errorf("%s: %w", name, err):
			default:
			}
		}
	}()
}

// wait blocks until ctx ends (a signal) or a component fails, and says which.
func (c *conductor) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-c.failed:
		return err
	}
}

// phase is one step of the shutdown.
type phase struct {
	name  string
	comps []string                        // components to cancel and wait for
	fn    func(ctx context.Context) error // then this, if set
}

// shutdown runs the phases in order under budget and returns the first
// error a component ended with (context cancellation is not one).
func (c *conductor) shutdown(budget time.Duration, phases []phase) error {
	start := time.Now()
	deadline := start.Add(budget)
	var firstErr error
	for _, p := range phases {
		ps := time.Now()
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		var late []string
		for _, name := range p.comps {
			if comp := c.comps[name]; comp != nil {
				comp.cancel()
			}
		}
		for _, name := range p.comps {
			comp := c.comps[name]
			if comp == nil {
				continue
			}
			select {
			case <-comp.done:
				if comp.err != nil && !errors.Is(comp.err, context.Canceled) && firstErr == nil {
					firstErr = fmt.Errorf("%s: %w", name, comp.err)
				}
			case <-ctx.Done():
				late = append(late, name)
			}
		}
		var err error
		if p.fn != nil && ctx.Err() == nil {
			err = p.fn(ctx)
		}
		cancel()
		fields := []zap.Field{zap.String("phase", p.name), zap.Duration("took", time.Since(ps))}
		switch {
		case len(late) > 0:
			c.log.Error("shutdown phase did not finish within shutdown.budget; going on without it (raise shutdown.budget if this repeats)",
				append(fields, zap.Strings("unfinished", late), zap.Duration("budget", budget))...)
		case err != nil:
			c.log.Warn("shutdown phase finished with an error", append(fields, zap.Error(err))...)
		default:
			c.log.Info("shutdown phase done", fields...)
		}
	}
	c.log.Info("shutdown finished", zap.Duration("took", time.Since(start)), zap.Duration("budget", budget))
	return firstErr
}
