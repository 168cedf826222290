package bench

import (
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is what one run measured. Main prints it as a table, or with --json
// as one JSON object that unmarshals back into a Result. Durations are
// nanoseconds in JSON.
type Result struct {
	// Config is the configuration that ran (the password is never included).
	Config Config `json:"config"`
	// Host records where the load generator ran, for comparing results.
	Host Host `json:"host"`
	// Start is when the clock started: after every client connected and subscribed.
	Start time.Time `json:"start"`
	// Messages is set for pubsub, latency and queue.
	Messages *MessageStats `json:"messages,omitempty"`
	// Conns is set for conns.
	Conns *ConnStats `json:"conns,omitempty"`
	// Error is the error Run returned, if any; the figures are then partial.
	Error string `json:"error,omitempty"`
}

// Host describes the machine that generated the load.
type Host struct {
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	CPUs      int    `json:"cpus"`
}

func thisHost() Host {
	return Host{GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU()}
}

// MessageStats is the outcome of a pubsub, latency or queue run.
type MessageStats struct {
	// Publishers and Subscribers are the client counts that ran.
	Publishers  int `json:"publishers"`
	Subscribers int `json:"subscribers"`
	// Sent counts messages the broker acknowledged (PUBACK for QoS 1, PUBCOMP
	// for QoS 2, success reason code); for QoS 0, messages written.
	Sent uint64 `json:"sent"`
	// SendWindow is from the start to the last acknowledgement (QoS 0: last write).
	SendWindow time.Duration `json:"send_window"`
	// SendRate is Sent / SendWindow, in messages per second.
	SendRate float64 `json:"send_rate"`
	// Rejected counts publishes acknowledged with a failure reason code (v5).
	Rejected uint64 `json:"rejected,omitempty"`
	// Unacked counts publishes still unacknowledged when the drain ended; they
	// are not in Sent and not counted as lost.
	Unacked uint64 `json:"unacked,omitempty"`
	// Expected is how many deliveries Sent should produce: Sent × subscribers
	// for fanin and fanout, Sent for pairs and queue.
	Expected uint64 `json:"expected"`
	// Received counts deliveries of this run's messages, duplicates included.
	Received uint64 `json:"received"`
	// ReceiveWindow is from the start to the last delivery.
	ReceiveWindow time.Duration `json:"receive_window"`
	// ReceiveRate is Received / ReceiveWindow, in deliveries per second.
	ReceiveRate float64 `json:"receive_rate"`
	// Lost counts expected deliveries of sent messages that never arrived.
	Lost uint64 `json:"lost"`
	// Duplicates counts deliveries of a message the receiver (queue: the
	// group) had already received.
	Duplicates uint64 `json:"duplicates"`
	// OutOfOrder counts deliveries with a lower sequence number than one the
	// same subscriber already had from the same publisher.
	OutOfOrder uint64 `json:"out_of_order"`
	// Foreign counts messages that did not carry this run's header (other
	// publishers on the same topics, or left over from an earlier run).
	Foreign uint64 `json:"foreign,omitempty"`
	// Latency is end-to-end: publisher's send call to subscriber's callback.
	Latency Latency `json:"latency"`
	// Drain is how long the drain took; DrainComplete tells whether every
	// acknowledgement and expected delivery arrived before --drain ran out.
	Drain         time.Duration `json:"drain"`
	DrainComplete bool          `json:"drain_complete"`
	// PerSubscriber is each subscriber's delivery count (queue: per consumer).
	PerSubscriber []uint64 `json:"per_subscriber,omitempty"`
	// MinShare and MaxShare are the smallest and largest fraction of all
	// deliveries that one consumer got (queue only; 1/subs each when even).
	MinShare float64 `json:"min_share,omitempty"`
	MaxShare float64 `json:"max_share,omitempty"`
	// CPU is the generator's and (with --pid) the broker's CPU use from the
	// start to the end of the drain.
	CPU *CPU `json:"cpu,omitempty"`
}

// Latency summarises end-to-end latency. Percentiles come from a log-linear
// histogram whose buckets are at most 1.6 % wide; they are reported as the
// bucket's upper edge, clamped to [Min, Max].
type Latency struct {
	Count uint64        `json:"count"`
	Min   time.Duration `json:"min"`
	Mean  time.Duration `json:"mean"`
	P50   time.Duration `json:"p50"`
	P95   time.Duration `json:"p95"`
	P99   time.Duration `json:"p99"`
	Max   time.Duration `json:"max"`
}

// ConnStats is the outcome of a conns run.
type ConnStats struct {
	// Requested is --conns; Connected got a successful CONNACK; Failed did not
	// (FirstError says why); Dropped were lost during the hold.
	Requested  int    `json:"requested"`
	Connected  int    `json:"connected"`
	Failed     int    `json:"failed"`
	Dropped    int    `json:"dropped"`
	FirstError string `json:"first_error,omitempty"`
	// ConnectTime is from the first dial to the last CONNACK.
	ConnectTime time.Duration `json:"connect_time"`
	// ConnectRate is Connected / ConnectTime, per second.
	ConnectRate float64 `json:"connect_rate"`
	// Held is how long the connections were held open.
	Held time.Duration `json:"held"`
	// NoFileLimit is this process's RLIMIT_NOFILE soft limit after raising it.
	NoFileLimit uint64 `json:"nofile_limit"`
	// RSSBefore and RSSAfter are the broker's VmRSS in bytes before connecting
	// and at the end of the hold (0 without --pid).
	RSSBefore int64 `json:"rss_before,omitempty"`
	RSSAfter  int64 `json:"rss_after,omitempty"`
	// BytesPerConn is (RSSAfter − RSSBefore) / Connected.
	BytesPerConn float64 `json:"bytes_per_conn,omitempty"`
}

// WriteTable prints r as a short aligned table. The first line names the
// scenario, URL, protocol, QoS, payload size and duration.
func (r *Result) WriteTable(w io.Writer) error {
	c := r.Config
	var b strings.Builder
	qos, size := strconv.Itoa(int(c.QoS)), strconv.Itoa(c.Size)
	if c.Scenario == ScenarioConns {
		qos, size = "-", "-"
	}
	fmt.Fprintf(&b, "%s  url=%s  protocol=%d  qos=%s  size=%s  duration=%s", c.Scenario, c.URL, c.Protocol, qos, size, c.Duration)
	switch c.Scenario {
	case ScenarioConns:
		fmt.Fprintf(&b, "  conns=%d  hold=%s  keepalive=%s  connect-rate=%s", c.Conns, c.Hold, c.KeepAlive, rateString(c.ConnectRate))
	case ScenarioQueue:
		fmt.Fprintf(&b, "  pubs=%d  consumers=%d  group=%s  rate=%s  inflight=%d", c.Pubs, c.Subs, c.Group, rateString(c.Rate), c.Inflight)
	default:
		fmt.Fprintf(&b, "  mode=%s  pubs=%d  subs=%d  rate=%s  inflight=%d", c.TopicMode, c.Pubs, c.Subs, rateString(c.Rate), c.Inflight)
	}
	b.WriteByte('\n')

	// Columns: what, count, rate; anything after the last tab is free text.
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	if m := r.Messages; m != nil {
		sentNote := "acknowledged by the broker"
		if c.QoS == 0 {
			sentNote = "written (QoS 0 has no acknowledgement)"
		}
		fmt.Fprintf(tw, "sent\t%d\t%s msg/s\t%s\n", m.Sent, human(m.SendRate), sentNote)
		fmt.Fprintf(tw, "received\t%d\t%s deliveries/s\texpected %d\n", m.Received, human(m.ReceiveRate), m.Expected)
		fmt.Fprintf(tw, "lost\t%d\n", m.Lost)
		fmt.Fprintf(tw, "duplicates\t%d\n", m.Duplicates)
		fmt.Fprintf(tw, "out of order\t%d\n", m.OutOfOrder)
		if m.Rejected > 0 || m.Unacked > 0 || m.Foreign > 0 {
			fmt.Fprintf(tw, "not counted\t%d rejected, %d unacknowledged, %d foreign\n", m.Rejected, m.Unacked, m.Foreign)
		}
		l := m.Latency
		fmt.Fprintf(tw, "latency\tp50 %s  p95 %s  p99 %s  max %s  (%d samples)\n", ms(l.P50), ms(l.P95), ms(l.P99), ms(l.Max), l.Count)
		state := "complete"
		if !m.DrainComplete {
			state = "incomplete: --drain ran out"
		}
		fmt.Fprintf(tw, "drain\t%s  %s\n", m.Drain.Round(time.Millisecond), state)
		if u := m.CPU; u != nil {
			broker := "not measured (--pid)"
			if u.Broker >= 0 {
				broker = strconv.FormatFloat(u.Broker, 'f', 2, 64) + " cores"
			}
			fmt.Fprintf(tw, "cpu\tgenerator %.2f cores  broker %s  (of %d, over %s)\n", u.Generator, broker, u.CPUs, u.Window.Round(time.Millisecond))
		}
		if c.Scenario == ScenarioQueue && len(m.PerSubscriber) > 0 {
			fmt.Fprintf(tw, "spread\tmin %.1f%%  max %.1f%%  (even: %.1f%% each of %d consumers)\n",
				100*m.MinShare, 100*m.MaxShare, 100/float64(len(m.PerSubscriber)), len(m.PerSubscriber))
		}
	}
	if s := r.Conns; s != nil {
		fmt.Fprintf(tw, "connected\t%d of %d\t%s conn/s\tin %s\n", s.Connected, s.Requested, human(s.ConnectRate), s.ConnectTime.Round(time.Millisecond))
		if s.Failed > 0 {
			fmt.Fprintf(tw, "failed\t%d\t%s\n", s.Failed, s.FirstError)
		}
		fmt.Fprintf(tw, "dropped\t%d\tduring the %s hold\n", s.Dropped, s.Held.Round(time.Millisecond))
		if s.RSSAfter > 0 {
			fmt.Fprintf(tw, "broker rss\t%s → %s\t%s per connection\n", bytesString(float64(s.RSSBefore)), bytesString(float64(s.RSSAfter)), bytesString(s.BytesPerConn))
		}
		fmt.Fprintf(tw, "nofile\t%d\n", s.NoFileLimit)
	}
	if r.Error != "" {
		fmt.Fprintf(tw, "error\t%s\n", r.Error)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func rateString(r float64) string {
	if r == 0 {
		return "max"
	}
	return strconv.FormatFloat(r, 'f', -1, 64) + "/s"
}

// human formats a rate with three significant figures and a k/M suffix.
func human(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	default:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64) + "ms"
}

func bytesString(b float64) string {
	switch {
	case b >= 1<<30 || b <= -(1<<30):
		return strconv.FormatFloat(b/(1<<30), 'f', 2, 64) + " GiB"
	case b >= 1<<20 || b <= -(1<<20):
		return strconv.FormatFloat(b/(1<<20), 'f', 1, 64) + " MiB"
	case b >= 1<<10 || b <= -(1<<10):
		return strconv.FormatFloat(b/(1<<10), 'f', 1, 64) + " KiB"
	default:
		return strconv.FormatFloat(b, 'f', 0, 64) + " B"
	}
}
