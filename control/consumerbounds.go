package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-cdn/meridian/purge"
)

// Defaults of Config.MaxConsumers and Config.ConsumerInactiveLimit.
const (
	// DefaultMaxConsumers is nats-server's own default bound per stream
	// (JSDefaultMaxConsumersPerStream), set on the stream so that it holds whatever the
	// server's configuration says.
	DefaultMaxConsumers = 1000
	// DefaultConsumerInactiveLimit is the longest a fleet process asks a consumer to outlive
	// its last use: an edge's purge replay (purge.ReplayInactiveThreshold). A KV watch asks
	// nothing and gets the limit.
	DefaultConsumerInactiveLimit = purge.ReplayInactiveThreshold
)

// boundConsumers bounds the consumers of stream: at most maxConsumers of them, whoever made
// them, and none unused for longer than inactive. NATS cannot bound the consumers of one
// credential (the fleet is one account), but these two bound what a leaked one can hold:
// a runaway is refused at maxConsumers, and what it made goes once it stops using it (the
// server refuses a consumer asking for a longer threshold, and gives a durable one that
// asks for none the limit, where before it lived for ever).
//
// A consumer that would outlive the limit (no threshold, or a longer one) was made while the
// stream had none (before this version) or a longer one. It is deleted, whoever made it (no
// fleet process makes one): the server applies a limit only to consumers made after it, and
// refuses one below a consumer's threshold. Making sure of the streams at a start keeps the
// bounds (fleet.EnsureBuckets, purge.EnsureStream), so no consumer is made without them
// meanwhile. One that is also a hostile push consumer (see consumerSweeper) counts in
// hostile, as the sweeper would have counted it.
func boundConsumers(ctx context.Context, js jetstream.JetStream, stream string, maxConsumers int, inactive time.Duration, hostile prometheus.Counter, log *slog.Logger) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", stream, err)
	}
	// Listed first, deleted after: deleting while the list pages by offset would skip some.
	var lasting []*jetstream.ConsumerInfo
	l := st.ListConsumers(ctx)
	for ci := range l.Info() { // read to the end: the lister's goroutine ends when it has sent all
		if t := ci.Config.InactiveThreshold; t <= 0 || t > inactive {
			lasting = append(lasting, ci)
		}
	}
	if err := l.Err(); err != nil {
		return fmt.Errorf("list consumers of stream %s: %w", stream, err)
	}
	for _, ci := range lasting {
		err := js.DeleteConsumer(ctx, stream, ci.Name)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue // gone meanwhile
		}
		if err != nil {
			return fmt.Errorf("delete consumer %s of stream %s that would outlive the inactivity limit: %w", ci.Name, stream, err)
		}
		deliver := ci.Config.DeliverSubject
		if deliver != "" && !inboxDeliverSubject(deliver) {
			hostile.Inc()
		}
		// Once per consumer made without a limit: a bounded number, at start only.
		log.Warn("deleted a consumer that would outlive the inactivity limit (docs/security.md, \"Consumers\")",
			"stream", stream, "consumer", ci.Name, "deliver_subject", deliver)
	}
	cfg := st.CachedInfo().Config
	if cfg.MaxConsumers == maxConsumers && cfg.ConsumerLimits.InactiveThreshold == inactive {
		return nil
	}
	cfg.MaxConsumers = maxConsumers
	cfg.ConsumerLimits.InactiveThreshold = inactive
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("bound the consumers of stream %s: %w", stream, err)
	}
	return nil
}
