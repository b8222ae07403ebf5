package store

import (
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestPendingReadYourWrites: Put no longer waits for Ristretto's goroutine (pending.go), yet
// whatever a Put did is what the next call on that key sees, while Ristretto's goroutine is
// held so that it has applied none of the Sets: a Lookup finds the new key, a second Put of
// it replaces the first, a Delete deletes it for good.
func TestPendingReadYourWrites(t *testing.T) {
	const size = 300
	tests := []struct {
		name string
		// do runs with Ristretto's goroutine held; after runs once it is released and
		// caught up.
		do, after func(t *testing.T, s *Store, key string)
	}{
		{"lookup after put", func(t *testing.T, s *Store, key string) {
			s.Put(keyed(key, 1, size))
			if o, _, _ := s.Lookup("h.test/"+key, nil); o == nil {
				t.Fatalf("%s not found right after its Put", key)
			} else if v := checkKeyed(t, o, key, size); v != 1 {
				t.Errorf("%s read version %d, want 1", key, v)
			}
		}, func(t *testing.T, s *Store, key string) {
			if o, _, _ := s.Lookup("h.test/"+key, nil); o == nil {
				t.Errorf("%s not found once Ristretto caught up", key)
			}
		}},
		{"put twice", func(t *testing.T, s *Store, key string) {
			s.Put(keyed(key, 1, size))
			s.Put(keyed(key, 2, size))
			if o, _, _ := s.Lookup("h.test/"+key, nil); o == nil {
				t.Fatalf("%s not found after two Puts", key)
			} else if v := checkKeyed(t, o, key, size); v != 2 {
				t.Errorf("%s read version %d after the second Put, want 2", key, v)
			}
		}, func(t *testing.T, s *Store, key string) {
			if o, _, _ := s.Lookup("h.test/"+key, nil); o == nil {
				t.Errorf("%s gone once Ristretto caught up", key)
			} else if v := checkKeyed(t, o, key, size); v != 2 {
				t.Errorf("%s read version %d once Ristretto caught up, want 2", key, v)
			}
		}},
		{"delete after put", func(t *testing.T, s *Store, key string) {
			s.Put(keyed(key, 1, size))
			s.Delete("h.test/" + key)
			if o, _, _ := s.Lookup("h.test/"+key, nil); o != nil {
				t.Errorf("%s found right after its Delete", key)
			}
		}, func(t *testing.T, s *Store, key string) {
			if o, _, _ := s.Lookup("h.test/"+key, nil); o != nil {
				t.Errorf("%s back once Ristretto caught up", key)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStoreOf(t, 16<<20)
			release := holdRistretto(t, s)
			// The settles of "put twice" and "delete after put" wait for Ristretto's
			// goroutine: release it once they ask (a Wait is a Set queued behind it).
			var wg sync.WaitGroup
			done := make(chan struct{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(done)
				for i := range 20 {
					tt.do(t, s, tt.name+strconv.Itoa(i))
				}
			}()
			// "lookup after put" runs through while held; the others block in their
			// first settle, which the release lets go.
			if tt.name == "lookup after put" {
				<-done
			}
			release()
			wg.Wait()
			s.cache.Wait()
			for i := range 20 {
				tt.after(t, s, tt.name+strconv.Itoa(i))
			}
		})
	}
}

// TestPendingForgotten: once Ristretto has applied the Sets, confirm forgets them, and the
// bytes they counted against pendMax are given back.
func TestPendingForgotten(t *testing.T) {
	s := newStoreOf(t, 16<<20)
	for i := range 1000 {
		s.Put(keyed("k"+strconv.Itoa(i), 1, 300))
	}
	// confirm's rounds run after the Puts' kicks; a round begun after the last Put forgets
	// them all. Ask for rounds until one has (each waits for Ristretto).
	for try := 0; s.pending.n.Load() != 0 || s.pendBytes.Load() != 0; try++ {
		if try == 1000 {
			t.Fatalf("%d keys, %d B still pending after 1000 rounds", s.pending.n.Load(), s.pendBytes.Load())
		}
		round := s.confirmed.Load()
		s.kickConfirm()
		for s.confirmed.Load() == round {
			s.cache.Wait() // let Ristretto's goroutine, and so confirm's Wait, go on
		}
	}
	for i := range 1000 {
		if o, _, _ := s.Lookup("h.test/k"+strconv.Itoa(i), nil); o == nil {
			t.Fatalf("k%d not found once confirmed", i)
		}
	}
}

// TestPendingLookupRacesConfirm: Puts of new keys each followed at once by its Lookup, on
// both cores, while confirm forgets keys as fast as Ristretto applies them: no Lookup may
// fall between the two (Ristretto not showing the key yet, the overlay no longer).
func TestPendingLookupRacesConfirm(t *testing.T) {
	s := newStoreOf(t, 64<<20) // room for every key: none refused
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := range 5000 {
				key := "w" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
				if !s.Put(keyed(key, 1, 100)) {
					t.Errorf("Put(%s) refused", key)
					return
				}
				if o, _, _ := s.Lookup("h.test/"+key, nil); o == nil {
					t.Errorf("%s not found right after its Put", key)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestPendingLookupRacesSettle: a Lookup whose look in Ristretto missed a pending key (its Set
// not applied yet), and whose look at the pending keys came after a settle had forgotten it,
// must look in Ristretto again, as it does after a confirm round: the key was stored all along.
// A settle forgets a key when a move takes its record, or when a second Put of it then pends
// nothing (Ristretto behind: pendMax); both run here in the gap between the Lookup's two looks.
// confirm is stopped, so that only the settle forgets.
func TestPendingLookupRacesSettle(t *testing.T) {
	const key, size = "k", 300
	tests := []struct {
		name string
		// settle runs in the gap, with Ristretto's goroutine released.
		settle func(t *testing.T, s *Store, pending ref)
		want   int // the version the Lookup must read
	}{
		{"move", func(t *testing.T, s *Store, r ref) {
			g, off, idx, ok := s.place(r)
			if !ok {
				t.Fatal("k's record not found")
			}
			s.move(g, idx, int(off), recordLen(g.b, int(off)), time.Now().UnixNano())
			if got := s.Stats().Moved; got != 1 {
				t.Fatalf("Moved = %d, want 1", got)
			}
		}, 1},
		{"put past pendMax", func(t *testing.T, s *Store, _ ref) {
			s.pendMax = 0 // Ristretto behind: this Put waits for it, and pends nothing
			if !s.Put(keyed(key, 2, size)) {
				t.Fatal("the second Put refused")
			}
		}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStoreOf(t, 16<<20)
			stopConfirming(s)
			release := holdRistretto(t, s)
			if !s.Put(keyed(key, 1, size)) {
				t.Fatal("Put refused")
			}
			r, ok := s.pendingRef("h.test/" + key)
			if !ok || r.h == 0 {
				t.Fatalf("k pending as %+v, %v; want its record pending", r, ok)
			}
			fired := false
			s.missHook = func(k string) {
				if k != "h.test/"+key || fired {
					return
				}
				fired = true
				release() // Ristretto applies k's Set: the settle's Wait returns
				tt.settle(t, s, r)
			}
			o, _, _ := s.Lookup("h.test/"+key, nil)
			if !fired {
				t.Fatal("the Lookup did not miss in Ristretto")
			}
			if o == nil {
				t.Fatal("k not found: the settle forgot it between the Lookup's two looks")
			}
			if v := checkKeyed(t, o, key, size); v != tt.want {
				t.Errorf("k read version %d, want %d", v, tt.want)
			}
		})
	}
}

// holdRistretto holds Ristretto's goroutine in an exit until release is called (Cleanup calls
// it too): the exit of a value too large for the store, which that goroutine refuses (Del's
// exit runs on its caller's). Sets made meanwhile wait in its buffer, unapplied.
func holdRistretto(t *testing.T, s *Store) (release func()) {
	hold := &ref{e: &entry{}}
	entered, released := make(chan struct{}), make(chan struct{})
	s.exitHook = func(r ref) {
		if r == *hold {
			close(entered)
			<-released
		}
	}
	s.items.Add(1) // as put does: the exit takes one
	s.cache.Set("hold", *hold, s.cache.MaxCost()+1)
	<-entered
	var once sync.Once
	release = func() { once.Do(func() { close(released) }) }
	t.Cleanup(release) // before the store's Close, registered earlier
	return release
}

// stopConfirming stops s's confirm goroutine, so that only settle forgets pending keys. Close
// still works.
func stopConfirming(s *Store) {
	close(s.stopConfirm)
	<-s.confirmDone
	s.stopConfirm = make(chan struct{}) // for Close to close
}
