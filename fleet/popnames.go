package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/wire"
)

// PoPNames knows which PoPs have nodes in the fleet bucket, for a node whose View is scoped
// to a few PoPs (an edge checking the PoPs its clients' beacon reports name). It reads the
// bucket stream's subjects, one request however large the fleet, every Interval, instead of
// receiving every node's heartbeat. A PoP whose nodes all left stays known until their keys
// expire or are deleted and compacted.
type PoPNames struct {
	// JS is the JetStream context the bucket is read through. Required.
	JS jetstream.JetStream
	// Prefix is the NATS name prefix; empty means wire.DefaultPrefix.
	Prefix string
	// Interval is how often the names are read again; zero means 10 s.
	Interval time.Duration
	// Logger receives read failures; nil discards.
	Logger *slog.Logger

	mu     sync.Mutex
	names  map[string]bool
	stream jetstream.Stream // Run's goroutine only: looked up once, then one request a read
}

// Known reports whether pop had nodes at the last read (false before the first).
func (p *PoPNames) Known(pop string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.names[pop]
}

// Run reads the names at once and then every Interval until ctx ends; it keeps the last names
// while a read fails.
func (p *PoPNames) Run(ctx context.Context) error {
	every := p.Interval
	if every <= 0 {
		every = 10 * time.Second
	}
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		names, err := p.read(rctx)
		cancel()
		if err == nil {
			p.mu.Lock()
			p.names = names
			p.mu.Unlock()
		} else if ctx.Err() == nil {
			log.Warn("read the fleet's PoPs; keeping the last", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (p *PoPNames) read(ctx context.Context) (map[string]bool, error) {
	bucket := wire.Bucket(p.Prefix, wire.FleetBucket)
	if p.stream == nil {
		s, err := p.JS.Stream(ctx, "KV_"+bucket)
		if err != nil {
			return nil, fmt.Errorf("look up the fleet bucket %s: %w", bucket, err)
		}
		p.stream = s
	}
	prefix := "$KV." + bucket + "."
	info, err := p.stream.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return nil, fmt.Errorf("list the fleet bucket %s: %w", bucket, err)
	}
	names := make(map[string]bool)
	for subj := range info.State.Subjects {
		key := strings.TrimPrefix(subj, prefix)
		if pop, _, ok := strings.Cut(key, "."); ok {
			names[pop] = true
		}
	}
	return names, nil
}
