package sim

import (
	"math"
	"math/rand/v2"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-cdn/meridian/sim/scenario"
)

// Zipf samples ranks 0..n-1 with probability proportional to 1/(rank+1)^alpha. Unlike
// math/rand/v2's Zipf it accepts any alpha >= 0 (the web's popularity skew is about 0.9,
// below the s > 1 that rand.Zipf needs): it keeps the cumulative distribution and
// binary-searches it, so a sample costs O(log n) and the table n float64s.
type Zipf struct {
	cdf []float64
}

// NewZipf builds the sampler; n < 1 is treated as 1.
func NewZipf(n int, alpha float64) *Zipf {
	n = max(n, 1)
	cdf := make([]float64, n)
	var sum float64
	for k := range n {
		sum += math.Pow(float64(k+1), -alpha)
		cdf[k] = sum
	}
	for k := range cdf {
		cdf[k] /= sum
	}
	cdf[n-1] = 1
	return &Zipf{cdf: cdf}
}

// Rank maps u in [0,1) to a rank.
func (z *Zipf) Rank(u float64) int {
	i := sort.SearchFloat64s(z.cdf, u)
	// SearchFloat64s finds the first cdf >= u; u equal to a boundary belongs to the next rank.
	if i < len(z.cdf) && z.cdf[i] == u {
		i++
	}
	return min(i, len(z.cdf)-1)
}

// P is the probability of rank k.
func (z *Zipf) P(k int) float64 {
	if k < 0 || k >= len(z.cdf) {
		return 0
	}
	if k == 0 {
		return z.cdf[0]
	}
	return z.cdf[k] - z.cdf[k-1]
}

// Workload is the immutable, shareable part of a scenario's traffic: object popularity and
// sizes, city weights and the flash-crowd windows. Each client draws from its own Generator.
type Workload struct {
	seed    uint64
	objects int
	zipf    *Zipf
	sizes   []scenario.SizeClass
	sizeCDF []float64
	cities  []scenario.City
	cityCDF []float64
	flashes []scenario.Event
	ttl     time.Duration
	swr     time.Duration
	sie     time.Duration
}

// NewWorkload prepares the workload of a validated scenario.
func NewWorkload(s *scenario.Scenario) *Workload {
	w := &Workload{
		seed:    s.Seed,
		objects: max(s.Workload.Objects, 1),
		zipf:    NewZipf(s.Workload.Objects, s.Workload.ZipfAlpha),
		sizes:   s.Workload.Sizes,
		cities:  s.Clients.Cities,
		ttl:     s.Workload.TTL,
		swr:     s.Workload.SWR,
		sie:     s.Workload.SIE,
	}
	if len(w.sizes) == 0 {
		w.sizes = scenario.DefaultSizes()
	}
	w.sizeCDF = cumulative(len(w.sizes), func(i int) float64 { return w.sizes[i].Weight })
	w.cityCDF = cumulative(len(w.cities), func(i int) float64 { return w.cities[i].Population })
	for _, e := range s.SortedEvents() {
		if e.Kind == scenario.EventFlashCrowd {
			w.flashes = append(w.flashes, e)
		}
	}
	return w
}

func cumulative(n int, weight func(int) float64) []float64 {
	cdf := make([]float64, n)
	var sum float64
	for i := range n {
		sum += max(weight(i), 0)
		cdf[i] = sum
	}
	for i := range cdf {
		cdf[i] /= sum
	}
	return cdf
}

func pick(cdf []float64, u float64) int {
	i := sort.Search(len(cdf), func(i int) bool { return cdf[i] > u })
	return min(i, len(cdf)-1)
}

// Objects is the catalogue size; object ids are 0..Objects()-1 in popularity order (0 is the
// hottest). Flash-crowd objects have ids from Objects() up.
func (w *Workload) Objects() int { return w.objects }

// FlashObject is the id of the object that the i-th flash crowd (in time order) asks for.
func (w *Workload) FlashObject(i int) int { return w.objects + i }

// HotObjects returns the n most popular object ids: what a purge storm purges.
func (w *Workload) HotObjects(n int) []int {
	n = min(max(n, 0), w.objects)
	ids := make([]int, n)
	for i := range ids {
		ids[i] = i
	}
	return ids
}

// Size is object id's body size: a function of the seed and the id, so every client, run and
// the origin agree on it without coordination.
func (w *Workload) Size(id int) int {
	u := float64(splitmix(w.seed^uint64(id)*0x9e3779b97f4a7c15)>>11) / (1 << 53)
	return w.sizes[pick(w.sizeCDF, u)].Bytes
}

// Path is object id's request path (see ObjectPath).
func (w *Workload) Path(id int) string {
	return ObjectPath(id, w.Size(id), w.ttl, w.swr, w.sie)
}

// ObjectPath is the one place that names objects:
// /obj/<id>?size=<bytes>&cc=<Cache-Control>&sk=o<id>&groups="g<id>". The reference origin
// serves any path and takes the body size and the Cache-Control header it sends from the
// query: max-age=ttl plus stale-while-revalidate and stale-if-error when non-zero (whole
// seconds). Every object also carries its own surrogate key (ObjectKey) and RFC 9875 cache
// group (ObjectGroup), so the purge storm can purge by URL, key and group alike.
func ObjectPath(id, bytes int, ttl, swr, sie time.Duration) string {
	cc := "max-age=" + strconv.Itoa(int(ttl/time.Second))
	if swr > 0 {
		cc += ", stale-while-revalidate=" + strconv.Itoa(int(swr/time.Second))
	}
	if sie > 0 {
		cc += ", stale-if-error=" + strconv.Itoa(int(sie/time.Second))
	}
	var b strings.Builder
	b.WriteString("/obj/")
	b.WriteString(strconv.Itoa(id))
	b.WriteString("?size=")
	b.WriteString(strconv.Itoa(bytes))
	b.WriteString("&cc=")
	b.WriteString(url.QueryEscape(cc))
	b.WriteString("&sk=")
	b.WriteString(ObjectKey(id))
	b.WriteString("&groups=%22")
	b.WriteString(ObjectGroup(id))
	b.WriteString("%22")
	return b.String()
}

// ObjectKey is object id's surrogate key.
func ObjectKey(id int) string { return "o" + strconv.Itoa(id) }

// ObjectGroup is object id's RFC 9875 cache group.
func ObjectGroup(id int) string { return "g" + strconv.Itoa(id) }

// ObjectID returns the id in a path built by ObjectPath (ignoring the query), or -1.
func ObjectID(path string) int {
	rest, ok := strings.CutPrefix(path, "/obj/")
	if !ok {
		return -1
	}
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		rest = rest[:i]
	}
	id, err := strconv.Atoi(rest)
	if err != nil || id < 0 || strconv.Itoa(id) != rest {
		return -1
	}
	return id
}

// Request is one drawn request.
type Request struct {
	City   int    // index into the scenario's client cities
	Object int    // object id
	Path   string // request path, from ObjectPath
	Flash  bool   // the request belongs to a flash crowd
}

// Generator draws one client's requests. It is not safe for concurrent use: give each client
// goroutine its own, from a distinct stream number.
type Generator struct {
	w   *Workload
	rng *rand.Rand
}

// Generator returns the generator of stream number stream; the same seed and stream always
// yield the same sequence.
func (w *Workload) Generator(stream uint64) *Generator {
	return &Generator{w: w, rng: rand.New(rand.NewPCG(w.seed, splitmix(stream)))}
}

// City draws a city index weighted by population.
func (g *Generator) City() int { return pick(g.w.cityCDF, g.rng.Float64()) }

// Object draws an object for a request sent at time at (since the end of the warm-up): the
// active flash crowd's object with its share, else a Zipf-popular catalogue object.
func (g *Generator) Object(at time.Duration) (id int, flash bool) {
	// Always draw both numbers so that the sequence of draws does not depend on when the
	// request is sent: timings vary between runs, the stream must not.
	u, v := g.rng.Float64(), g.rng.Float64()
	for i, f := range g.w.flashes {
		if at >= f.At && at < f.End() {
			if v < f.Share {
				return g.w.FlashObject(i), true
			}
			break
		}
	}
	return g.w.zipf.Rank(u), false
}

// Next draws a whole request at time at: a city, then an object.
func (g *Generator) Next(at time.Duration) Request {
	city := g.City()
	id, flash := g.Object(at)
	if c := g.w.crowdCity(at); flash && c >= 0 {
		city = c // a crowd from one city (measure.go)
	}
	return Request{City: city, Object: id, Path: g.w.Path(id), Flash: flash}
}

// splitmix is the SplitMix64 finaliser: a cheap, well-mixed hash of a 64-bit value.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
