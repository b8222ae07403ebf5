package dnsroute

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/control/fleet"
)

// liveFleet connects to NATS and watches the fleet registry (PoPs, nodes, health, load and
// operator drains) and the routing policy in the config bucket, for a server that routes to a
// live fleet instead of its config file's PoPs.
type liveFleet struct {
	nc      *nats.Conn
	view    *fleet.View
	cfgView *fleet.ConfigView
	log     *slog.Logger
}

func newLiveFleet(cfg Config) (*liveFleet, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nc, err := nats.Connect(cfg.NATS, nats.Name("meridian-dns"), nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond), nats.RetryOnFailedConnect(true),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("nats error", "err", err) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("nats disconnected", "err", err) }),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }))
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", cfg.NATS, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &liveFleet{
		nc:      nc,
		view:    fleet.NewView(fleet.ViewConfig{JS: js, Prefix: cfg.Prefix, TTL: cfg.HeartbeatTTL, Clock: cfg.Clock, Logger: log}),
		cfgView: fleet.NewConfigView(fleet.ConfigViewConfig{JS: js, Prefix: cfg.Prefix, Logger: log}),
		log:     log,
	}, nil
}

// run watches until ctx ends, applying routing-policy changes to s; it returns once its
// watchers have stopped and the connection is closed.
func (l *liveFleet) run(ctx context.Context, s *Server) {
	var wg sync.WaitGroup
	for _, f := range []func(context.Context) error{l.view.Run, l.cfgView.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-l.cfgView.Ready():
		case <-ctx.Done():
			return
		}
		for {
			changed := l.cfgView.Changed()
			if p := l.cfgView.Routing(); p.Policy != "" {
				if err := s.SetPolicy(p); err != nil {
					l.log.Error("refused routing policy from the config bucket", "err", err)
				}
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	l.nc.Close()
}

// RunLive runs a server whose fleet comes from NATS (cfg.NATS): it waits for the registry to
// load (at most wait), then serves until ctx ends.
func RunLive(ctx context.Context, cfg Config, wait time.Duration) error {
	l, err := newLiveFleet(cfg)
	if err != nil {
		return err
	}
	cfg.Fleet = l.view
	s, err := New(cfg)
	if err != nil {
		l.nc.Close()
		return err
	}
	wctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		l.run(wctx, s)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case <-l.view.Ready():
	case <-time.After(wait):
		l.log.Warn("fleet registry not loaded yet; answering from what arrives", "waited", wait)
	case <-ctx.Done():
		return nil
	}
	return s.Run(ctx)
}
