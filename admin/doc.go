// Package admin is the operator's side of the HTTP listener: Prometheus
// metrics (/metrics), health and readiness (/healthz, /readyz), the admin
// API under /api/v1 (clients, subscriptions, retained messages, queues,
// bridges, rules, topic history; described by /api/v1/openapi.json) and the
// browser console at / (built from web/ and embedded in the binary).
//
// Every endpoint reads the other packages' state when it is asked: metrics
// are collected at scrape time from the counters mochi, the listeners, the
// store, the queues and the bridges keep already. What had no counter is
// counted by the small mochi hook of this package (messages and bytes by
// QoS, refused connections by reason) or by a callback of its owner (fsync
// and bridge send latency).
//
// Access: with users configured (auth.users_file or auth.jwt) the API and
// /metrics need a user with the admin role (HTTP Basic or a bearer token);
// with none, only loopback clients. /healthz, /readyz, the console's static
// files, /api/v1/console-config and /api/v1/openapi.json are open. Every
// error is JSON {"error": "..."} saying what was wrong and how to fix it;
// bad input is a 4xx, never a 500.
//
// The package imports the features it shows (auth, queue, bridge,
// persistence, listen), never broker; rules plug in through the Rules
// interface.
package admin
