// Command segsim models three designs for a store whose small objects live in append-only
// byte segments (docs/benchmarks.md, "Sixteenth pass"), all given the same memory: the live
// records plus a slack. In the first, eviction stays Ristretto's (sample 5 live records, evict
// the least frequent, by exact counts or, as Ristretto does, by TinyLFU's aged counts with its
// admission test), and space is freed by moving the live records of the emptiest segment
// to the head segment; three variants of it move only some of them and drop the rest
// (keepRule: docs/benchmarks.md, "Thirtieth pass"). In the second, the oldest segment is freed, moving only the records
// read since they were written (FIFO with reinsertion). The third is S3-FIFO (s3fifo). For
// equal-size records, unique-URL churn and a Zipf workload (s = 1.05 over 50 times the
// capacity), it prints the records moved per record stored and the hit ratio. Its hit ratios
// compare the policies, not real stores.
//
//	go run ./bench/segsim
package main

import (
	"fmt"
	"math"
	"math/rand/v2"
)

type rec struct {
	key, seg, freq int
	live           bool
	read           bool // read since it was written (a hit since its put or its last move)
	missed         bool // its key had missed before it was stored (keepMissed)
}

// keepRule is which records a greedy reclaim moves rather than drops.
type keepRule int

const (
	keepAll     keepRule = iota // every live record (Ristretto decides every eviction)
	keepRead                    // records read since they were written
	keepMissed                  // those, and records whose key had missed before (a doorkeeper of misses)
	keepCounted                 // those read, and records TinyLFU counts at 2 or more (its counts, which Ristretto does not expose)
)

// worth reports whether reclaim moves record i under s.keep.
func (s *sim) worth(i int) bool {
	r := s.recs[i]
	switch s.keep {
	case keepRead:
		return r.read
	case keepMissed:
		return r.read || r.missed
	case keepCounted:
		return r.read || s.hist[r.key] >= 2
	}
	return true
}

type sim struct {
	r                   *rand.Rand
	segSize, budget     int
	recs                []rec
	segLive             map[int]int
	segRecs             map[int][]int
	head, used, nextSeg int
	live                []int // live record indices (sampling)
	pos                 map[int]int
	byKey               map[int]int
	moved, stored       int
	fifo                bool // free the oldest segment, moving only records read since written
	// keep, if not keepAll: the greedy reclaim moves only the records of the emptiest segment
	// that keep says are worth it, and drops the others (eviction stays the sampled LFU's).
	keep         keepRule
	lastMiss     map[int]int // key -> s.reqs at its last miss (keepMissed's doorkeeper)
	missedBefore bool        // the key being stored missed before, within 10 capacities of requests
	hits, reqs   int
	// tiny adds TinyLFU as Ristretto has it: every request counts in a frequency history
	// (halved every window requests); eviction samples by it, and a new record is admitted
	// only if its count is at least the victim's.
	tiny         bool
	hist         map[int]int
	seen, window int
}

func (s *sim) openHead() {
	for s.fifo && len(s.segLive)+1 > s.budget {
		oldest := math.MaxInt
		for g := range s.segLive {
			oldest = min(oldest, g)
		}
		recs := s.segRecs[oldest]
		delete(s.segLive, oldest)
		delete(s.segRecs, oldest)
		for _, i := range recs {
			if !s.recs[i].live {
				continue
			}
			if s.recs[i].freq > 1 {
				s.moved++
				s.put(s.recs[i].key, 1, i)
			} else {
				s.drop(i)
			}
		}
	}
	for !s.fifo && len(s.segLive)+1 > s.budget { // greedy: the emptiest segment
		victim, best := -1, math.MaxInt
		for g, l := range s.segLive {
			if g != s.head && l < best {
				victim, best = g, l
			}
		}
		recs := s.segRecs[victim]
		delete(s.segLive, victim)
		delete(s.segRecs, victim)
		for _, i := range recs {
			if !s.recs[i].live {
				continue
			}
			if !s.worth(i) {
				s.drop(i)
				continue
			}
			s.moved++
			s.put(s.recs[i].key, s.recs[i].freq, i)
		}
	}
	s.head, s.used = s.nextSeg, 0
	s.nextSeg++
	s.segLive[s.head] = 0
}

// put appends a record for key; old is the record it replaces (a move), or -1.
func (s *sim) put(key, freq, old int) {
	if s.used == s.segSize {
		s.openHead()
	}
	i := len(s.recs)
	s.recs = append(s.recs, rec{key: key, seg: s.head, freq: freq, live: true})
	s.segRecs[s.head] = append(s.segRecs[s.head], i)
	s.segLive[s.head]++
	s.used++
	if old >= 0 {
		s.recs[old].live = false
		p := s.pos[old]
		s.live[p] = i
		s.pos[i] = p
		delete(s.pos, old)
	} else {
		s.stored++
		s.recs[i].missed = s.missedBefore
		s.pos[i] = len(s.live)
		s.live = append(s.live, i)
	}
	s.byKey[key] = i
}

// evict drops the least frequent of 5 live records sampled at random, as Ristretto does.
// victim samples 5 live records and returns the least frequent.
func (s *sim) victim() int {
	best := -1
	for range 5 {
		if i := s.live[s.r.IntN(len(s.live))]; best == -1 || s.freq(i) < s.freq(best) {
			best = i
		}
	}
	return best
}

func (s *sim) freq(i int) int {
	if s.tiny {
		return s.hist[s.recs[i].key]
	}
	return s.recs[i].freq
}

func (s *sim) drop(i int) {
	s.recs[i].live = false
	if _, ok := s.segLive[s.recs[i].seg]; ok {
		s.segLive[s.recs[i].seg]--
	}
	bp := s.pos[i]
	last := s.live[len(s.live)-1]
	s.live[bp] = last
	s.pos[last] = bp
	s.live = s.live[:len(s.live)-1]
	delete(s.pos, i)
	delete(s.byKey, s.recs[i].key)
}

// step serves one request for key: a hit, or a miss that stores it.
func (s *sim) step(key, capacity int) {
	s.reqs++
	if s.tiny {
		s.hist[key]++
		if s.seen++; s.seen == s.window {
			s.seen = 0
			for k, n := range s.hist {
				if n /= 2; n == 0 {
					delete(s.hist, k)
				} else {
					s.hist[k] = n
				}
			}
		}
	}
	if i, ok := s.byKey[key]; ok {
		s.hits++
		s.recs[i].freq++
		s.recs[i].read = true
		return
	}
	if s.keep == keepMissed {
		n, ok := s.lastMiss[key]
		s.missedBefore = ok && s.reqs-n <= s.window
		s.lastMiss[key] = s.reqs
	}
	if !s.fifo && len(s.live) >= capacity {
		v := s.victim()
		if s.tiny && s.hist[key] < s.hist[s.recs[v].key] {
			return // not admitted
		}
		s.drop(v)
	}
	s.put(key, 1, -1)
}

// run returns the records moved per record stored and the hit ratio, in the steady state.
// Every policy gets the same memory: capacity records plus slack in segments.
func run(fifo, tiny bool, keep keepRule, capacity, segSize int, slack float64, zipf bool, steps int) (float64, float64) {
	s := &sim{r: rand.New(rand.NewPCG(1, 2)), segSize: segSize, fifo: fifo, tiny: tiny, keep: keep, lastMiss: map[int]int{},
		hist: map[int]int{}, window: 10 * capacity,
		budget:  int(math.Ceil(float64(capacity)*(1+slack)/float64(segSize))) + 1,
		segLive: map[int]int{0: 0}, segRecs: map[int][]int{}, nextSeg: 1,
		pos: map[int]int{}, byKey: map[int]int{}}
	z := rand.NewZipf(s.r, 1.05, 1, uint64(50*capacity))
	next := 1 << 40
	key := func() int {
		if zipf {
			return int(z.Uint64())
		}
		next++
		return next
	}
	for range steps { // warm up to the steady state
		s.step(key(), capacity)
	}
	m0, st0 := s.moved, s.stored
	s.hits, s.reqs = 0, 0
	for range steps {
		s.step(key(), capacity)
	}
	return float64(s.moved-m0) / float64(max(s.stored-st0, 1)), float64(s.hits) / float64(s.reqs)
}

// queue is a FIFO of keys.
type queue struct{ keys []int }

func (q *queue) push(k int) { q.keys = append(q.keys, k) }
func (q *queue) len() int   { return len(q.keys) }
func (q *queue) pop() int {
	k := q.keys[0]
	q.keys = q.keys[1:]
	return k
}

// s3fifo models S3-FIFO (Yang et al., SOSP 2023) over the same memory: a small FIFO for new
// records (a tenth of it), a main FIFO, and a ghost FIFO of the keys last dropped from the
// small one, whose return goes straight to the main one. Each FIFO maps onto append-only
// segments evicted oldest first, so a promotion or a reinsertion is a move.
func s3fifo(capacity int, slack float64, zipf bool, steps int) (float64, float64) {
	r := rand.New(rand.NewPCG(1, 2))
	total := int(float64(capacity) * (1 + slack))
	smallCap := total / 10
	mainCap := total - smallCap
	var small, main, ghost queue
	freq := map[int]int{}
	ghosts := map[int]bool{}
	var moved, stored, hits, reqs int
	var insertMain func(k int)
	evictMain := func() {
		for {
			k := main.pop()
			if freq[k] > 0 {
				freq[k]--
				main.push(k)
				moved++
				continue
			}
			delete(freq, k)
			return
		}
	}
	insertMain = func(k int) {
		for main.len() >= mainCap {
			evictMain()
		}
		main.push(k)
	}
	evictSmall := func() {
		k := small.pop()
		if freq[k] > 1 {
			freq[k] = 0
			moved++
			insertMain(k)
			return
		}
		delete(freq, k)
		ghost.push(k)
		ghosts[k] = true
		for ghost.len() > mainCap {
			delete(ghosts, ghost.pop())
		}
	}
	z := rand.NewZipf(r, 1.05, 1, uint64(50*capacity))
	next := 1 << 40
	step := func() {
		k := next
		if zipf {
			k = int(z.Uint64())
		} else {
			next++
		}
		reqs++
		if f, ok := freq[k]; ok {
			hits++
			freq[k] = min(f+1, 3)
			return
		}
		stored++
		freq[k] = 0
		if ghosts[k] {
			delete(ghosts, k)
			insertMain(k)
			return
		}
		for small.len() >= smallCap {
			evictSmall()
		}
		small.push(k)
	}
	for range steps {
		step()
	}
	moved, stored, hits, reqs = 0, 0, 0, 0
	for range steps {
		step()
	}
	return float64(moved) / float64(max(stored, 1)), float64(hits) / float64(reqs)
}

func main() {
	fmt.Println("policy                       slack  workload  moved per stored  hit ratio")
	for _, zipf := range []bool{false, true} {
		w := "churn"
		if zipf {
			w = "zipf"
		}
		for _, slack := range []float64{0.0625, 0.125, 0.25} {
			for _, p := range []struct {
				name       string
				fifo, tiny bool
				keep       keepRule
			}{{"sampled LFU, greedy moves  ", false, false, keepAll}, {"TinyLFU+LFU, greedy moves  ", false, true, keepAll},
				{"  moving only if read      ", false, true, keepRead}, {"  ... or missed before     ", false, true, keepMissed},
				{"  ... or counted twice     ", false, true, keepCounted}, {"oldest segment, reinsert   ", true, false, keepAll}} {
				m, h := run(p.fifo, p.tiny, p.keep, 8000, 64, slack, zipf, 300000)
				fmt.Printf("%s  %5.3f  %-8s  %16.2f  %9.3f\n", p.name, slack, w, m, h)
			}
			m, h := s3fifo(8000, slack, zipf, 300000)
			fmt.Printf("%s  %5.3f  %-8s  %16.2f  %9.3f\n", "S3-FIFO                    ", slack, w, m, h)
		}
	}
}
