package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strings"
)

// UsageError reports a bad command line: an unknown flag or scenario, or an
// invalid value. The caller prints it and exits with status 2.
type UsageError struct {
	Err error
}

func (e *UsageError) Error() string {
	return "bench: " + e.Err.Error() + "\n(run 'mote bench -h' for usage)"
}

func (e *UsageError) Unwrap() error { return e.Err }

const usageHead = `usage: mote bench SCENARIO [flags]

Scenarios (each bounded by --duration and by interruption):
  pubsub   --pubs N --subs M --topic-mode fanin|fanout|pairs --qos 0|1|2 --size B --rate R
           fanin: N publishers → 1 topic → M subscribers; fanout: 1 publisher → M subscribers;
           pairs: N publisher/subscriber pairs, each on its own topic
  latency  pubsub with 1 publisher and 1 subscriber, QoS 1, paced at --rate (default 5000/s)
  queue    --pubs N publishers → $share/GROUP/TOPIC with --subs M consumers (default 4), QoS 1
  webhook  --pubs N publishers → TOPIC, delivered by the broker's http bridge to an HTTP sink on
           --sink (configure a bridge with filters [TOPIC/#] and url http://SINK/); raw or json bodies,
           batches (JSON arrays) too
  amqp     --pubs N publishers → TOPIC, carried by the broker's amqp bridge (filters [TOPIC/#],
           exchange --exchange, default routing keys) to RabbitMQ at --amqp-url, where a private
           queue bound to the exchange counts them; publisher confirms make it at least once
  conns    --conns N idle connections held for --hold; --pid PID adds the broker's memory per connection

Reports messages/s sent (acknowledged for QoS ≥ 1), deliveries/s, loss, duplicates,
out-of-order deliveries and end-to-end latency p50/p95/p99/max.

Flags:
`

// flags binds the command-line flags to c. json, verbose and cpuprofile are Main's own.
func flags(c *Config, json, verbose *bool, cpuprofile *string) *flag.FlagSet {
	fs := flag.NewFlagSet("mote bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // Main reports errors itself, as *UsageError
	fs.StringVar(&c.URL, "url", c.URL, "broker `URL`: mqtt://host:port or ws://host:port/path")
	fs.IntVar(&c.Protocol, "protocol", c.Protocol, "MQTT protocol `version`: 4 (3.1.1) or 5")
	fs.StringVar(&c.Username, "username", c.Username, "CONNECT user `name`")
	fs.StringVar(&c.Password, "password", c.Password, "CONNECT `password` (visible to ps; prefer a throwaway account)")
	fs.StringVar(&c.ClientPrefix, "client-prefix", c.ClientPrefix, "client identifier `prefix`")
	fs.BoolVar(&c.Clean, "clean", c.Clean, "clean session / clean start (--clean=false keeps v5 sessions 5 minutes)")
	fs.DurationVar(&c.KeepAlive, "keepalive", c.KeepAlive, "keepalive `interval` sent in CONNECT (whole seconds)")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", c.ConnectTimeout, "dial plus CONNACK `timeout` per client")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "how long to publish (conns: longest connect phase)")
	fs.IntVar(&c.Pubs, "pubs", c.Pubs, "`number` of publishers")
	fs.IntVar(&c.Subs, "subs", c.Subs, "`number` of subscribers (queue: consumers; pairs: defaults to --pubs)")
	fs.Func("qos", "QoS `level` 0, 1 or 2 for publish and subscribe (latency, queue: default 1)", func(s string) error {
		switch s {
		case "0", "1", "2":
			c.QoS = s[0] - '0'
			return nil
		}
		return errors.New("must be 0, 1 or 2")
	})
	fs.IntVar(&c.Size, "size", c.Size, "payload size in `bytes` (at least 24, the benchmark header)")
	fs.StringVar(&c.TopicMode, "topic-mode", c.TopicMode, "pubsub `layout`: fanin, fanout or pairs")
	fs.StringVar(&c.Topic, "topic", c.Topic, "topic `prefix`; the run id and a suffix follow")
	fs.StringVar(&c.Group, "group", c.Group, "shared subscription `group` (queue)")
	fs.StringVar(&c.Sink, "sink", "127.0.0.1:18090", "`address` of the webhook scenario's HTTP sink (the broker's http bridge posts there)")
	fs.StringVar(&c.AMQPURL, "amqp-url", c.AMQPURL, "RabbitMQ `URL` the amqp scenario consumes from")
	fs.StringVar(&c.Exchange, "exchange", c.Exchange, "`exchange` the broker's amqp bridge publishes to (amqp)")
	fs.Float64Var(&c.Rate, "rate", c.Rate, "`msg/s` per publisher, 0 = as fast as possible (latency: default 5000)")
	fs.IntVar(&c.Inflight, "inflight", c.Inflight, "QoS ≥ 1 publishes each publisher keeps `outstanding`")
	fs.DurationVar(&c.Drain, "drain", c.Drain, "`wait` after publishing for acks and deliveries before counting loss")
	fs.IntVar(&c.Conns, "conns", c.Conns, "`number` of idle connections (conns)")
	fs.Float64Var(&c.ConnectRate, "connect-rate", c.ConnectRate, "new connections `per second`, 0 = unlimited (at most 200 in flight)")
	fs.DurationVar(&c.Hold, "hold", c.Hold, "how long to hold the connections open (conns)")
	fs.IntVar(&c.PID, "pid", c.PID, "broker process `id`: its VmRSS per connection (conns), its CPU beside the generator's (message scenarios)")
	fs.BoolVar(json, "json", false, "print the result as one JSON object instead of a table")
	fs.BoolVar(verbose, "verbose", false, "log progress before the result")
	fs.StringVar(cpuprofile, "cpuprofile", "", "write the load generator's own CPU profile to `file` (is the generator the bottleneck?)")
	return fs
}

// Main parses args (everything after "mote bench") and runs one scenario,
// printing to out. A bad command line returns a *UsageError (exit 2); any
// other error means the run failed (exit 1) — the partial result has been
// printed by then. -h prints usage to out and returns nil.
func Main(ctx context.Context, args []string, out io.Writer) error {
	scenario, err := scanScenario(args)
	if errors.Is(err, flag.ErrHelp) {
		return writeUsage(out)
	}
	if err != nil {
		return &UsageError{Err: err}
	}
	if scenario == "" {
		return &UsageError{Err: errors.New("no scenario: want pubsub, latency, queue or conns")}
	}

	// Second pass: the same flags over the scenario's defaults.
	cfg := DefaultConfig(scenario)
	var asJSON, verbose bool
	var cpuprofile string
	fs := flags(&cfg, &asJSON, &verbose, &cpuprofile)
	if _, err := parseInterleaved(fs, args); err != nil {
		return &UsageError{Err: err}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.Scenario == ScenarioPubSub && cfg.TopicMode == ModePairs && !set["subs"] {
		cfg.Subs = cfg.Pubs
	}
	if err := cfg.Validate(); err != nil {
		return &UsageError{Err: err}
	}

	log := io.Discard
	if verbose {
		log = out
	}
	if os.Getenv("GOGC") == "" {
		// The generator allocates per received packet (paho), and a CPU
		// profile against Mosquitto showed about a fifth of its CPU in the
		// garbage collector; on a machine it shares with the broker that
		// time is taken from the broker. Its heap is small, so trade memory
		// for CPU. GOGC in the environment still wins.
		debug.SetGCPercent(genGCPercent)
	}
	if cpuprofile != "" {
		stop, err := startCPUProfile(cpuprofile)
		if err != nil {
			return err
		}
		defer stop()
	}
	res, runErr := Run(ctx, cfg, log)
	if asJSON {
		enc := json.NewEncoder(out)
		if err := enc.Encode(res); err != nil {
			return errors.Join(runErr, fmt.Errorf("bench: write result: %w", err))
		}
	} else if err := res.WriteTable(out); err != nil {
		return errors.Join(runErr, fmt.Errorf("bench: write result: %w", err))
	}
	return runErr
}

// scanScenario finds the scenario (the first positional argument) and checks
// the flags' syntax, using throwaway values.
func scanScenario(args []string) (string, error) {
	c := DefaultConfig("")
	var j, v bool
	var p string
	return parseInterleaved(flags(&c, &j, &v, &p), args)
}

// parseInterleaved parses flags before and after the one positional argument
// (the scenario), so both "mote bench --qos 1 pubsub" and "mote bench pubsub
// --qos 1" work.
func parseInterleaved(fs *flag.FlagSet, args []string) (string, error) {
	var scenario string
	for {
		if err := fs.Parse(args); err != nil {
			return "", err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return scenario, nil
		}
		if scenario != "" {
			return "", fmt.Errorf("unexpected argument %q after scenario %q", rest[0], scenario)
		}
		scenario, args = rest[0], rest[1:]
		switch scenario {
		case ScenarioPubSub, ScenarioLatency, ScenarioQueue, ScenarioConns, ScenarioWebhook, ScenarioAMQP:
		default:
			return "", fmt.Errorf("unknown scenario %q: want pubsub, latency, queue, conns or webhook", scenario)
		}
	}
}

func writeUsage(out io.Writer) error {
	c := DefaultConfig("")
	var j, v bool
	var p string
	fs := flags(&c, &j, &v, &p)
	var b strings.Builder
	b.WriteString(usageHead)
	fs.SetOutput(&b)
	fs.PrintDefaults()
	_, err := io.WriteString(out, b.String())
	return err
}

// genGCPercent is the generator's GOGC unless the environment sets one.
const genGCPercent = 400

// startCPUProfile profiles this process into path until the returned
// function is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("bench: --cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("bench: --cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: --cpuprofile:", err)
		}
	}, nil
}

// newLogger builds the progress logger Run writes to.
func newLogger(w io.Writer) *slog.Logger {
	if w == nil {
		w = io.Discard
	}
	return slog.New(slog.NewTextHandler(w, nil))
}
