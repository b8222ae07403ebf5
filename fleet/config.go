package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/wire"
)

// ErrNotFound is returned by the readers when the key does not exist.
var ErrNotFound = errors.New("not found")

// ConfigViewConfig configures a ConfigView.
type ConfigViewConfig struct {
	// JS is the JetStream context the config bucket is watched through. Required.
	JS jetstream.JetStream
	// Prefix is the NATS name prefix; empty means wire.DefaultPrefix.
	Prefix string
	// Logger receives watch failures and invalid values; nil discards.
	Logger *slog.Logger
	// Keys is the one key pattern watched ("routing", "host.>"); empty means every key. A
	// reader whose credential may watch only some keys (DNS: the routing policy) names them.
	Keys string
}

// ConfigView is a live, read-only picture of the config bucket: host configs, the routing
// policy and operator drains. Run keeps it current. When NATS is unreachable it keeps the last
// good values; an invalid value in the bucket is logged and skipped, leaving the key's previous
// good value in place. Its methods are safe for concurrent use.
type ConfigView struct {
	cfg     ConfigViewConfig
	log     *slog.Logger
	changed notifier
	ready   chan struct{}

	mu      sync.Mutex // guards the fields below
	hosts   map[string]wire.HostConfig
	routing wire.RoutingPolicy
	drains  map[string]bool
}

// NewConfigView returns a ConfigView; it watches nothing until Run.
func NewConfigView(cfg ConfigViewConfig) *ConfigView {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ConfigView{
		cfg:    cfg,
		log:    log,
		ready:  make(chan struct{}),
		hosts:  map[string]wire.HostConfig{},
		drains: map[string]bool{},
	}
}

// Run watches the config bucket until ctx ends and returns nil once it has stopped.
func (c *ConfigView) Run(ctx context.Context) error {
	keys := c.cfg.Keys
	if keys == "" {
		keys = ">"
	}
	Watch(ctx, c.cfg.JS, wire.Bucket(c.cfg.Prefix, wire.ConfigBucket), keys, c.log, configHandler{c})
	return nil
}

// Ready is closed once the bucket's initial contents are loaded.
func (c *ConfigView) Ready() <-chan struct{} { return c.ready }

// Changed returns a channel closed at the next change; call it again after each change.
func (c *ConfigView) Changed() <-chan struct{} { return c.changed.wait() }

// Hosts returns a copy of the host configs, by hostname.
func (c *ConfigView) Hosts() map[string]wire.HostConfig {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.hosts)
}

// Host returns one hostname's config.
func (c *ConfigView) Host(host string) (wire.HostConfig, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.hosts[strings.ToLower(host)]
	return h, ok
}

// Routing returns the routing policy (the zero policy, meaning defaults, when none is set).
func (c *ConfigView) Routing() wire.RoutingPolicy {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.routing
}

// Drained reports whether an operator drained pop.
func (c *ConfigView) Drained(pop string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.drains[pop]
}

type configHandler struct{ c *ConfigView }

func (h configHandler) Snapshot(entries []jetstream.KeyValueEntry) {
	c := h.c
	c.mu.Lock()
	hosts := map[string]wire.HostConfig{}
	drains := map[string]bool{}
	var routing wire.RoutingPolicy
	for _, e := range entries {
		switch k := e.Key(); {
		case strings.HasPrefix(k, "host."):
			if hc, ok := c.decodeHost(e); ok {
				hosts[hc.Host] = hc
			} else if old, ok := c.hosts[strings.TrimPrefix(k, "host.")]; ok {
				hosts[old.Host] = old
			}
		case k == wire.RoutingKey:
			routing = c.routing
			if r, ok := c.decodeRouting(e); ok {
				routing = r
			}
		case strings.HasPrefix(k, wire.DrainPrefix):
			drains[strings.TrimPrefix(k, wire.DrainPrefix)] = true
		}
	}
	c.hosts, c.drains, c.routing = hosts, drains, routing
	select {
	case <-c.ready:
	default:
		close(c.ready)
	}
	c.mu.Unlock()
	c.changed.notify()
}

func (h configHandler) Update(e jetstream.KeyValueEntry) {
	c := h.c
	put := e.Operation() == jetstream.KeyValuePut
	c.mu.Lock()
	switch k := e.Key(); {
	case strings.HasPrefix(k, "host."):
		if !put {
			delete(c.hosts, strings.TrimPrefix(k, "host."))
		} else if hc, ok := c.decodeHost(e); ok {
			c.hosts[hc.Host] = hc
		}
	case k == wire.RoutingKey:
		if !put {
			c.routing = wire.RoutingPolicy{}
		} else if r, ok := c.decodeRouting(e); ok {
			c.routing = r
		}
	case strings.HasPrefix(k, wire.DrainPrefix):
		pop := strings.TrimPrefix(k, wire.DrainPrefix)
		if put {
			c.drains[pop] = true
		} else {
			delete(c.drains, pop)
		}
	}
	c.mu.Unlock()
	c.changed.notify()
}

func (c *ConfigView) decodeHost(e jetstream.KeyValueEntry) (wire.HostConfig, bool) {
	hc, err := DecodeHostConfig(e.Value())
	if err == nil && wire.HostKey(hc.Host) != e.Key() {
		err = fmt.Errorf("host %q does not match its key", hc.Host)
	}
	if err != nil {
		c.log.Warn("skipping invalid host config; keeping the last good one", "key", e.Key(), "err", err)
		return hc, false
	}
	return hc, true
}

func (c *ConfigView) decodeRouting(e jetstream.KeyValueEntry) (wire.RoutingPolicy, bool) {
	var r wire.RoutingPolicy
	err := json.Unmarshal(e.Value(), &r)
	if err == nil {
		err = r.Validate()
	}
	if err != nil {
		c.log.Warn("skipping invalid routing policy; keeping the last good one", "err", err)
		return r, false
	}
	return r, true
}

// DecodeHostConfig decodes and validates a host config as stored in the config bucket.
// Unknown fields are ignored so that older nodes can read what newer control planes write.
func DecodeHostConfig(b []byte) (wire.HostConfig, error) {
	var hc wire.HostConfig
	if err := json.Unmarshal(b, &hc); err != nil {
		return hc, fmt.Errorf("decode host config: %w", err)
	}
	if err := hc.Validate(); err != nil {
		return hc, fmt.Errorf("validate host config: %w", err)
	}
	return hc, nil
}

func configKV(ctx context.Context, js jetstream.JetStream, prefix string) (jetstream.KeyValue, error) {
	b := wire.Bucket(prefix, wire.ConfigBucket)
	kv, err := js.KeyValue(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("bind config bucket %s: %w", b, err)
	}
	return kv, nil
}

// PutHost validates h (ValidateNew: a config written now meets every rule) and stores it under
// its host key.
func PutHost(ctx context.Context, js jetstream.JetStream, prefix string, h wire.HostConfig) error {
	if err := h.ValidateNew(); err != nil {
		return err
	}
	return putJSON(ctx, js, prefix, wire.HostKey(h.Host), h)
}

// GetHost reads one host's config; ErrNotFound when it has none.
func GetHost(ctx context.Context, js jetstream.JetStream, prefix, host string) (wire.HostConfig, error) {
	var hc wire.HostConfig
	kv, err := configKV(ctx, js, prefix)
	if err != nil {
		return hc, err
	}
	e, err := kv.Get(ctx, wire.HostKey(host))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return hc, fmt.Errorf("get host %s: %w", host, ErrNotFound)
	}
	if err != nil {
		return hc, fmt.Errorf("get host %s: %w", host, err)
	}
	return DecodeHostConfig(e.Value())
}

// DeleteHost removes a host's config; ErrNotFound when it has none.
func DeleteHost(ctx context.Context, js jetstream.JetStream, prefix, host string) error {
	kv, err := configKV(ctx, js, prefix)
	if err != nil {
		return err
	}
	key := wire.HostKey(host)
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete host %s: %w", host, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("delete host %s: %w", host, err)
	}
	// Deleting only the revision we saw keeps a concurrent PUT from being lost silently.
	if err := kv.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err != nil {
		return fmt.Errorf("delete host %s: %w", host, err)
	}
	return nil
}

// SetDrain marks pop as drained by an operator (drain true) or clears the mark.
func SetDrain(ctx context.Context, js jetstream.JetStream, prefix, pop string, drain bool) error {
	if err := wire.ValidatePoPID(pop); err != nil {
		return &wire.FieldError{Field: "pop", Err: err}
	}
	if drain {
		return putJSON(ctx, js, prefix, wire.DrainKey(pop), wire.Drain{PoP: pop, Since: time.Now().UTC()})
	}
	kv, err := configKV(ctx, js, prefix)
	if err != nil {
		return err
	}
	if err := kv.Delete(ctx, wire.DrainKey(pop)); err != nil {
		return fmt.Errorf("undrain %s: %w", pop, err)
	}
	return nil
}

// PutRouting validates r and stores it as the routing policy.
func PutRouting(ctx context.Context, js jetstream.JetStream, prefix string, r wire.RoutingPolicy) error {
	if err := r.Validate(); err != nil {
		return err
	}
	return putJSON(ctx, js, prefix, wire.RoutingKey, r)
}

// GetRouting reads the routing policy; the zero policy when none is set.
func GetRouting(ctx context.Context, js jetstream.JetStream, prefix string) (wire.RoutingPolicy, error) {
	var r wire.RoutingPolicy
	kv, err := configKV(ctx, js, prefix)
	if err != nil {
		return r, err
	}
	e, err := kv.Get(ctx, wire.RoutingKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("get routing policy: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return r, fmt.Errorf("decode routing policy: %w", err)
	}
	return r, nil
}

func putJSON(ctx context.Context, js jetstream.JetStream, prefix, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	kv, err := configKV(ctx, js, prefix)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, key, b); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// DrainedPoPs lists the PoPs an operator drained, sorted.
func (c *ConfigView) DrainedPoPs() []string {
	c.mu.Lock()
	out := make([]string, 0, len(c.drains))
	for p := range c.drains {
		out = append(out, p)
	}
	c.mu.Unlock()
	sort.Strings(out)
	return out
}
