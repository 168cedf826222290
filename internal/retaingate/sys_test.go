package retaingate

import (
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

func TestIsSysWildcard(t *testing.T) {
	for _, tc := range []struct {
		name   string
		filter string
		want   bool
	}{
		{name: "all of $SYS", filter: "$SYS/#", want: true},
		{name: "one level", filter: "$SYS/broker/+", want: true},
		{name: "inner plus", filter: "$SYS/+/clients/#", want: true},
		{name: "plain topic", filter: "$SYS/broker/time"},
		{name: "other case", filter: "$sys/#"}, // a different node of mochi's index
		{name: "first level wildcard", filter: "+/broker/#"},
		{name: "hash", filter: "#"},
		{name: "shared", filter: "$share/g/$SYS/#"},
		{name: "bare", filter: "$SYS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := isSysWildcard(tc.filter); got != tc.want {
				t.Fatalf("isSysWildcard(%q) = %v, want %v", tc.filter, got, tc.want)
			}
		})
	}
}

func TestMatching(t *testing.T) {
	idx := mqtt.NewTopicsIndex()
	for _, tp := range []string{"a", "a/b", "a/b/c", "x/b", "$SYS/broker/time", "$rules/x"} {
		idx.RetainMessage(packets.Packet{FixedHeader: packets.FixedHeader{Retain: true}, TopicName: tp, Payload: []byte("v"), Created: time.Now().Unix()})
	}
	for _, tc := range []struct{ filter, want string }{
		{"#", "a a/b a/b/c x/b"},
		{"a/#", "a a/b a/b/c"},
		{"+/b", "a/b x/b"},
		{"$SYS/#", "$SYS/broker/time"},
		{"+/broker/time", ""},
		{"a/b", "a/b"},
	} {
		var got []string
		for _, pk := range Matching(idx, tc.filter) {
			got = append(got, pk.TopicName)
		}
		if g := strings.Join(got, " "); g != tc.want {
			t.Errorf("Matching(%q) = %q, want %q", tc.filter, g, tc.want)
		}
	}
}
