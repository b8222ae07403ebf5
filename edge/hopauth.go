package edge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-cdn/meridian/wire"
)

// Node-to-node fill requests are authenticated by an HMAC over what the request asks for,
// keyed by the fleet's peer keyring (distributed by control over the authenticated bus, or a
// shared file for a fleet configured by hand). A node is trusted from its first request,
// whatever address it dials from and whether or not the receiver's registry view contains it
// yet; a client can never forge it.

// hopAuthHeader carries the signature of a fill request:
// "v1;k=<key id>;t=<unix ms>;n=<pop-node>;s=<base64url HMAC-SHA256>".
const hopAuthHeader = "Meridian-Fill-Auth"

// hopTrustedValue is what a node puts in the hop header of its answer to a fill request it
// verified. The requester stores a peer's or shield's answer only when it carries it: an
// answer given to an unverified requester lacks the surrogate keys, tags and groups a purge
// matches on, and a copy stored without them would silently escape purges by key.
const hopTrustedValue = "trusted"

// hopMaxSkew bounds how old (or how far in the future) a signed request may be: a signature
// replayed later than this is refused. Nodes' clocks are NTP-synchronised; this is generous.
const hopMaxSkew = 2 * time.Minute

// staticPeerKeyID names the key read from Config.PeerKeyFile / Config.PeerKey.
const staticPeerKeyID = "static"

// loadPeerKey returns the static keyring from cfg, if one is configured.
func loadPeerKey(cfg Config) (*wire.PeerKeyring, error) {
	secret := cfg.PeerKey
	if cfg.PeerKeyFile != "" {
		b, err := os.ReadFile(cfg.PeerKeyFile)
		if err != nil {
			return nil, fmt.Errorf("read peer key file: %w", err)
		}
		secret = []byte(strings.TrimSpace(string(b)))
	}
	if secret == nil {
		return nil, nil
	}
	ring := &wire.PeerKeyring{Keys: []wire.PeerKey{{ID: staticPeerKeyID, Secret: secret}}}
	if err := ring.Validate(); err != nil {
		return nil, fmt.Errorf("peer key: %w", err)
	}
	return ring, nil
}

// SetPeerKeyring replaces the keys fill requests are signed and verified with.
func (n *Node) SetPeerKeyring(r wire.PeerKeyring) {
	n.peerKeys.Store(&r)
}

// signHop signs a fill request to another node. Without a keyring the request goes unsigned:
// the other node answers it as a client's, and fetchAndStore will not store that answer.
func (n *Node) signHop(up *http.Request) {
	ring := n.peerKeys.Load()
	if ring == nil {
		return
	}
	now := n.clock()
	k, ok := ring.Signing(now)
	if !ok {
		return
	}
	ts := strconv.FormatInt(now.UnixMilli(), 10)
	sig := hopMAC(k.Secret, k.ID, ts, n.name, up.Method, up.Host, up.URL.RequestURI(), up.Header)
	up.Header.Set(hopAuthHeader, "v1;k="+k.ID+";t="+ts+";n="+n.name+";s="+base64.RawURLEncoding.EncodeToString(sig))
}

// verifyHop checks a request's hop signature against the keyring.
func (n *Node) verifyHop(r *http.Request) error {
	v := r.Header.Get(hopAuthHeader)
	if v == "" {
		return errors.New("unsigned")
	}
	ring := n.peerKeys.Load()
	if ring == nil {
		return errors.New("no peer keyring")
	}
	ver, rest, _ := strings.Cut(v, ";")
	if ver != "v1" {
		return fmt.Errorf("unknown version %q", ver)
	}
	var kid, ts, node, sig string
	for part := range strings.SplitSeq(rest, ";") {
		name, val, _ := strings.Cut(part, "=")
		switch name {
		case "k":
			kid = val
		case "t":
			ts = val
		case "n":
			node = val
		case "s":
			sig = val
		}
	}
	k, ok := ring.Lookup(kid)
	if !ok {
		return fmt.Errorf("unknown key %q", kid)
	}
	ms, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("bad timestamp")
	}
	if d := n.clock().Sub(time.UnixMilli(ms)); d > hopMaxSkew || d < -hopMaxSkew {
		return fmt.Errorf("timestamp off by %v", d.Round(time.Second))
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return errors.New("bad signature encoding")
	}
	if !hmac.Equal(got, hopMAC(k.Secret, kid, ts, node, r.Method, r.Host, r.URL.RequestURI(), r.Header)) {
		return errors.New("bad signature")
	}
	return nil
}

// hopMAC is the signature over everything a fill request's answer depends on and every
// fleet-only field it carries, so a signature cannot be moved to another target or tier.
func hopMAC(secret []byte, kid, ts, node, method, host, target string, h http.Header) []byte {
	m := hmac.New(sha256.New, secret)
	for _, s := range []string{"meridian-fill-v1", kid, ts, node, method, strings.ToLower(host), target,
		// Every Cache-Control line (the receiver reads them all); one line, the only form a
		// node sends, signs as before.
		h.Get(hopHeader), h.Get(purgeSeqHeader), strings.Join(h.Values("Cache-Control"), ", "),
		h.Get("If-None-Match"), h.Get("If-Modified-Since")} {
		m.Write([]byte(s))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

// stripFleetFields removes the fleet-only request fields from a request that is not a
// verified fill, so nothing downstream can mistake them for the fleet's.
func stripFleetFields(h http.Header) {
	delete(h, hopHeader)
	delete(h, hopAuthHeader)
	delete(h, purgeSeqHeader)
}

// isFleetField reports whether f (canonical) is one of the fields stripFleetFields removes.
func isFleetField(f string) bool {
	return f == hopHeader || f == hopAuthHeader || f == purgeSeqHeader
}
