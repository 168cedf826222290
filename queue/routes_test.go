package queue

import (
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	topics "github.com/motemq/mote/internal/topic"
	"github.com/motemq/mote/persistence"
)

// oracle is how groupsFor used to answer: mochi's index of every
// subscription, its shared entries narrowed by topics.Match, then the
// declared queues. routes must answer the same.
type oracle struct {
	idx      *mqtt.TopicsIndex
	declared []declaredQueue
}

func (o *oracle) groupsFor(topic string) []string {
	var groups []string
	for key := range o.idx.Subscribers(topic).Shared {
		if g, f, ok := memberOf(key); ok && topics.Match(f, topic) && !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	for _, d := range o.declared {
		if topics.Match(d.filter, topic) && !slices.Contains(groups, d.group) {
			groups = append(groups, d.group)
		}
	}
	return groups
}

// sameGroups compares as sets (both come out of map iterations), and
// reports duplicates.
func sameGroups(got, want []string) bool {
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	return slices.Equal(g, w) && len(slices.Compact(g)) == len(got)
}

type sharedSub struct{ group, filter, client string }

// checkRoutes subscribes subs (and declares declared) in both routes and
// mochi's index, compares every topic, unsubscribes half and compares
// again, then unsubscribes the rest and checks routes is empty again.
func checkRoutes(t *testing.T, subs []sharedSub, declared []declaredQueue, topicsToTry []string) {
	t.Helper()
	var r routes
	o := &oracle{idx: mqtt.NewTopicsIndex()}
	for _, d := range declared {
		r.declare(d.group, d.filter)
		if !slices.Contains(o.declared, d) {
			o.declared = append(o.declared, d)
		}
	}
	var kept []sharedSub
	for _, s := range subs {
		full := "$share/" + s.group + "/" + s.filter
		if !mqtt.IsValidFilter(full, false) {
			continue // mochi refuses it at SUBSCRIBE
		}
		if _, _, ok := memberOf(full); !ok {
			continue
		}
		o.idx.Subscribe(s.client, packets.Subscription{Filter: full})
		r.add(s.group, s.filter, s.client)
		kept = append(kept, s)
	}
	compare := func(stage string) {
		t.Helper()
		for _, topic := range topicsToTry {
			if got, want := r.match(topic), o.groupsFor(topic); !sameGroups(got, want) {
				t.Fatalf("%s: topic %q: routes %q, mochi's index %q\nsubscriptions %q\ndeclared %q", stage, topic, got, want, kept, declared)
			}
		}
	}
	compare("subscribed")
	for i, s := range kept {
		if i%2 == 0 {
			o.idx.Unsubscribe("$share/"+s.group+"/"+s.filter, s.client)
			r.remove(s.group, s.filter, s.client)
		}
	}
	compare("half unsubscribed")
	for _, s := range kept {
		o.idx.Unsubscribe("$share/"+s.group+"/"+s.filter, s.client)
		r.remove(s.group, s.filter, s.client)
	}
	compare("all unsubscribed")
	if n := r.n.Load(); n != int64(len(r.declared)) {
		t.Fatalf("after every unsubscribe routes counts %d entries, want the %d declared", n, len(r.declared))
	}
	if len(r.root.kids) != 0 {
		t.Fatalf("after every unsubscribe routes keeps levels %v", r.root.kids)
	}
}

// TestRoutesMatchesMochiIndex compares routes with mochi's index on random
// filters and topics built from levels that exercise the wildcards, empty
// levels and $-topics.
func TestRoutesMatchesMochiIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	levels := []string{"a", "b", "+", "#", "", "$SYS", "$q"}
	gen := func(max int) string {
		n := 1 + rng.IntN(max)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = levels[rng.IntN(len(levels))]
		}
		return strings.Join(parts, "/")
	}
	for round := range 300 {
		var subs []sharedSub
		var declared []declaredQueue
		for i := range 1 + rng.IntN(12) {
			s := sharedSub{"g" + strconv.Itoa(rng.IntN(4)), gen(4), "c" + strconv.Itoa(rng.IntN(3))}
			if i%5 == 4 {
				declared = append(declared, declaredQueue{s.group, s.filter})
				continue
			}
			subs = append(subs, s)
		}
		var tries []string
		for range 60 {
			tries = append(tries, gen(5))
		}
		t.Run(strconv.Itoa(round), func(t *testing.T) { checkRoutes(t, subs, declared, tries) })
	}
}

// FuzzRoutes: filters is a list of member filters separated by '|' (each
// starting with '=' is a declared queue's instead); the matches for topic
// and a few derived topics must be mochi's index's.
func FuzzRoutes(f *testing.F) {
	for _, seed := range [][2]string{
		{"a/#|a/+/#|+/#|#|+", "a"},
		{"a/#|a/+/#|+/#|#|+", "a/b"},
		{"#|+/x|=#|=+/x", "$SYS/x"},
		{"$SYS/#|=$SYS/+", "$SYS/broker/load"},
		{"a//b|a/+/b|/|+|=/#", "a//b"},
		{"sport/tennis/player1/#|sport/+|=sport/#", "sport/tennis/player1"},
		{"sport/tennis/+|+/+/+|=+/+", "sport/tennis/"},
		{"a/b#|a/+|=a/b#", "a/b#"},
		{"x/y|x/y|x/#", "x/y"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, filters, topic string) {
		var subs []sharedSub
		var declared []declaredQueue
		for i, fl := range strings.Split(filters, "|") {
			group := "g" + strconv.Itoa(i%3)
			if d, ok := strings.CutPrefix(fl, "="); ok {
				declared = append(declared, declaredQueue{group, d})
				continue
			}
			subs = append(subs, sharedSub{group, fl, "c" + strconv.Itoa(i%2)})
		}
		tries := []string{topic, topic + "/", "/" + topic, "$" + topic}
		if i := strings.LastIndexByte(topic, '/'); i >= 0 {
			tries = append(tries, topic[:i])
		}
		checkRoutes(t, subs, declared, tries)
	})
}

// TestRoutesFollowMembership drives the manager as mochi does: a group
// keeps taking messages while its only member is an offline persistent
// session (mochi's index still holds the subscription), and stops once
// the session expires (the guard hook's UnsubscribeClient) or
// unsubscribes; a declared queue takes messages without members.
func TestRoutesFollowMembership(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := persistence.Open(persistence.Config{Dir: t.TempDir(), Fsync: persistence.FsyncEverySecond}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	server := mqtt.New(&mqtt.Options{Logger: log})
	persist := persistence.NewHook(store, server, persistence.Options{})
	mg := New(server, store, persist, []Settings{{Name: "jobs", Filter: "jobs/#", Strategy: RoundRobin, Overflow: RejectNew, MaxDeliveries: 5, Durable: true}}, Defaults(), log)
	if err := server.AddHook(mg, nil); err != nil {
		t.Fatal(err)
	}
	if err := mg.Restore(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mg.Stop() })

	want := func(topic string, groups ...string) {
		t.Helper()
		if got := mg.routes.match(topic); !sameGroups(got, groups) {
			t.Fatalf("routes.match(%q) = %q, want %q", topic, got, groups)
		}
	}
	subscribe := func(cl *mqtt.Client, filters ...string) {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}}
		for _, f := range filters {
			sub := packets.Subscription{Filter: f, Qos: 1}
			server.Topics.Subscribe(cl.ID, sub) // as mochi's processSubscribe
			cl.State.Subscriptions.Add(f, sub)
			pk.Filters = append(pk.Filters, sub)
		}
		mg.OnSubscribed(cl, pk, make([]byte, len(filters)))
	}
	want("jobs/1", "jobs")
	want("other", nil...)
	want("$SYS/x", nil...)

	a := server.NewClient(nil, "tcp", "a", false)
	a.Properties.ProtocolVersion = 5
	server.Clients.Add(a)
	subscribe(a, "$share/w/work/#", "$share/all/#", "plain/#")
	want("work/1", "w", "all")
	want("$SYS/x", nil...) // [MQTT-4.7.2-1]
	want("jobs/1", "all", "jobs")

	// Offline persistent member: mochi keeps its subscriptions.
	a.Stop(packets.ErrServerShuttingDown)
	mg.OnDisconnect(a, nil, false)
	want("work/1", "w", "all")

	// It unsubscribes one group...
	mg.OnUnsubscribed(a, packets.Packet{Filters: packets.Subscriptions{{Filter: "$share/w/work/#"}}})
	want("work/1", "all")

	// ... and expires: the guard hook unsubscribes it from everything.
	server.UnsubscribeClient(a)
	want("work/1", nil...)
	want("jobs/1", "jobs")
	if subs := server.Topics.Subscribers("work/1"); len(subs.Shared) != 0 {
		t.Fatalf("mochi still holds %v", subs.Shared)
	}
	if n := mg.routes.n.Load(); n != 1 {
		t.Fatalf("routes counts %d entries after the member expired, want 1 (the declared queue)", n)
	}
}
