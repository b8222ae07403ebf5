package purge

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/wire"
)

func TestNames(t *testing.T) {
	tests := []struct {
		prefix, stream, cmd, ack, host string
	}{
		{"", "PURGE", "meridian.purge.cmd.www_example_com", "meridian.purge.ack.lon.n1", "www.example.com"},
		{"meridian", "PURGE", "meridian.purge.cmd.a-b_example", "meridian.purge.ack.lon.n1", "a-b.example"},
		{"edge.eu", "EDGE_EU_PURGE", "edge.eu.purge.cmd.x_y", "edge.eu.purge.ack.lon.n1", "x.y"},
		{"staging", "STAGING_PURGE", "staging.purge.cmd.x", "staging.purge.ack.lon.n1", "x"},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			if got := StreamName(tt.prefix); got != tt.stream {
				t.Errorf("StreamName(%q) = %q, want %q", tt.prefix, got, tt.stream)
			}
			if got := CommandSubject(tt.prefix, tt.host); got != tt.cmd {
				t.Errorf("CommandSubject(%q, %q) = %q, want %q", tt.prefix, tt.host, got, tt.cmd)
			}
			if got := AckSubject(tt.prefix, "lon", "n1"); got != tt.ack {
				t.Errorf("AckSubject(%q, lon, n1) = %q, want %q", tt.prefix, got, tt.ack)
			}
		})
	}
	if StreamName("") != wire.PurgeStream {
		t.Errorf("StreamName(\"\") = %q, want wire.PurgeStream %q", StreamName(""), wire.PurgeStream)
	}
}

func TestEnsureStream(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	ctx := testContext(t)
	for i := range 2 { // the second call must be harmless
		if err := EnsureStream(ctx, js, "", 0, 0); err != nil {
			t.Fatalf("EnsureStream call %d = %v, want nil", i+1, err)
		}
	}
	st, err := js.Stream(ctx, "PURGE")
	if err != nil {
		t.Fatalf("look up stream: %v", err)
	}
	cfg := st.CachedInfo().Config
	if cfg.MaxAge != DefaultRetention || cfg.Storage != jetstream.FileStorage || cfg.Replicas != 1 {
		t.Errorf("stream MaxAge, Storage, Replicas = %v, %v, %d; want %v, file, 1", cfg.MaxAge, cfg.Storage, cfg.Replicas, DefaultRetention)
	}
	if len(cfg.Subjects) != 1 || cfg.Subjects[0] != "meridian.purge.cmd.>" {
		t.Errorf("stream subjects = %q, want [meridian.purge.cmd.>]", cfg.Subjects)
	}
	// Acks are not stored: a message on the ack subject must not land in the stream.
	if _, err := js.Publish(ctx, AckSubject("", "lon", "n1"), []byte("{}")); err == nil {
		t.Errorf("publishing to the ack subject was stored by a stream; want no stream to capture it")
	}
	// Changing retention updates the stream in place.
	if err := EnsureStream(ctx, js, "", time.Hour, 1); err != nil {
		t.Fatalf("EnsureStream(1h) = %v", err)
	}
	st, _ = js.Stream(ctx, "PURGE")
	if got := st.CachedInfo().Config.MaxAge; got != time.Hour {
		t.Errorf("MaxAge after update = %v, want 1h", got)
	}
}

func TestPublish(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	ctx := testContext(t)
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		t.Fatal(err)
	}
	m := msg("www.example.com", KindURL, "https://www.example.com/a?b=1")
	seq, err := Publish(ctx, js, "", m)
	if err != nil || seq != 1 {
		t.Fatalf("Publish() = %d, %v; want 1, nil", seq, err)
	}
	t.Run("stored normalised on the host subject", func(t *testing.T) {
		st, _ := js.Stream(ctx, "PURGE")
		raw, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("GetMsg(%d): %v", seq, err)
		}
		if raw.Subject != "meridian.purge.cmd.www_example_com" {
			t.Errorf("subject = %q, want meridian.purge.cmd.www_example_com", raw.Subject)
		}
		got, err := DecodeMessage(raw.Data)
		if err != nil || got.ID != m.ID || len(got.Values) != 1 || got.Values[0] != "/a?b=1" {
			t.Errorf("stored message = %+v, %v; want id %s with values [/a?b=1]", got, err, m.ID)
		}
	})
	t.Run("duplicate id stored once", func(t *testing.T) {
		seq2, err := Publish(ctx, js, "", m)
		if err != nil || seq2 != seq {
			t.Errorf("second Publish() = %d, %v; want %d, nil", seq2, err, seq)
		}
		st, _ := js.Stream(ctx, "PURGE")
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != 1 {
			t.Errorf("stream holds %d messages, want 1", info.State.Msgs)
		}
	})
	t.Run("invalid refused", func(t *testing.T) {
		bad := msg("www.example.com", KindURL, "https://other.example/a")
		var fe *wire.FieldError
		if _, err := Publish(ctx, js, "", bad); !errors.As(err, &fe) || fe.Field != "values[0]" {
			t.Errorf("Publish(foreign URL) = %v, want a field error on values[0]", err)
		}
	})
	t.Run("prefix without stream", func(t *testing.T) {
		if _, err := Publish(ctx, js, "other", msg("www.example.com", KindAll)); err == nil {
			t.Errorf("Publish with prefix \"other\" and no OTHER_PURGE stream = nil, want an error")
		}
	})
}
