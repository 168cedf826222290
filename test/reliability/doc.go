// Package reliability runs the real mote binary as a child process and
// attacks it with every bad-input class of /work/shared/RELIABILITY.md (1–7)
// and the load scenarios R7, R8, R9, R12, R13 and R14: raw bytes on a
// net.Conn for malformed input, paho clients for the well-behaved ones.
// Every hostile case asserts the MQTT 5 reason code (CONNACK, DISCONNECT,
// SUBACK, PUBACK/PUBREC/PUBCOMP) or, for MQTT 3.1.1 and before CONNECT, a
// silent close, within one second; and after it that the process is alive
// (no exit, no "panic" in its log) and a healthy client still round-trips a
// QoS 1 message within a second. The load tests also run a well-behaved
// client's steady QoS 1 flow during the abuse and bound its publish→delivery
// p99 (50 ms).
//
// TestMain builds cmd/mote twice: with -race (brokertest.Build, as test/e2e
// does) for the hostile-input tables, and without for the load tests, whose
// figures (memory per connection, latency under a flood) must describe the
// binary operators run. Brokers listen on 127.0.0.1 ephemeral ports (port
// 1883 is taken on the CI machine); brokertest.Spawn kills them when a test
// ends. Each broker also serves net/http/pprof on an ephemeral port so a
// test can force a GC (/debug/pprof/heap?gc=1) before reading the live heap
// from /metrics.
//
//	go test -race ./test/reliability/                          # 75-95 s on 2 cores
//	MOTE_SOAK=1 go test -race -timeout 20m ./test/reliability/  # make soak: longer variants
//
// MOTE_SOAK=1 idles the 10,000 connections 10 s instead of 2, uses the
// default 10 s connect timeout in R8 and the default 5 s write timeout in R9,
// publishes 20,000 messages in R9 and 100,000 retained topics in R14, and
// hoards aliases on 64 connections. The load tests run one after another
// (no t.Parallel): two of them at once on two cores would measure each
// other.
//
// # Coverage
//
// Class / item of RELIABILITY.md → test here (→ in-process test elsewhere
// that already covers it, not repeated beyond one line of a table).
//
//	1 Framing
//	  Remaining Length of 5 bytes, not minimal     TestFraming            (broker/robust_test.go TestRobustMalformedPackets)
//	  Remaining Length > max_packet_size           TestFraming, TestFramingOversizeNoAllocation (RSS of 64 × 256 MiB headers)
//	                                               (TestRobustOversizePackets: allocation counted in-process)
//	  Remaining Length > bytes that arrive         TestFramingSlowDrip (connect timeout; keepalive after CONNECT), TestConnectFloodAndSlowloris
//	                                               (TestRobustConnectTimeout)
//	  Remaining Length < fields (#501 ...)         TestFraming            (TestRobustIssue501SubscribeWithoutOptions)
//	  packet type 0 / 15, reserved flag bits       TestFraming
//	  PUBLISH QoS 3, first packet not CONNECT,     TestFraming
//	  second CONNECT, server-only packets
//	2 Strings: invalid UTF-8, overlong, U+0000,    TestStrings: each fault × topic, filter (SUBSCRIBE, UNSUBSCRIBE), client id,
//	  surrogates, U+FFFF, controls, noncharacters  username, will topic, property strings (content type, response topic, user
//	                                               properties, authentication method, reason string), v5 and 3.1.1
//	3 Topics: empty (CVE-2021-34432), wildcards in TestTopics (TestRobustInvalidFiltersAndTopics)
//	  PUBLISH, # not last, a+, a#, $share/ forms,
//	  $SYS publishing, *, >, 64 KiB, 129 levels,
//	  whitespace
//	4 Properties (v5): duplicates, not allowed on   TestProperties, TestTopicAliases
//	  the packet, subscription identifier 0 / on
//	  PUBLISH, topic alias 0 / > max / unknown,
//	  receive maximum 0, 100,000 user properties
//	  (CVE-2021-41039)
//	5 Flow control: > Receive Maximum (0x93),      TestFlowControl
//	  packet-id reuse (QoS 1, QoS 2 before PUBREL),
//	  PUBREL unknown id (0x92), QoS 2 flood without
//	  PUBREL (CVE-2023-28366), unsolicited acks (and
//	  that they do not widen the client's window)
//	6 Resource abuse
//	  connect floods, idle sockets before CONNECT  TestConnectFloodAndSlowloris (R8), TestTenThousandConnections (R7)
//	  max_clients                                  TestMaxClients
//	  per-address connect rate                     TestConnectRatePerAddress (TestAuthLimitConnectRate)
//	  subscriptions per SUBSCRIBE and per client   TestSubscriptionFlood (R14) (TestAuthLimitMaxSubscriptions)
//	  topic-alias hoarding                         TestTopicAliases (R13)
//	  retained-message flood                       TestRetainedFlood (R14); the per-user cap (auth) is checked once configurable
//	  sessions never resumed (CVE-2025-62723)      TestSessionExpiryCap
//	  slow / non-reading subscribers               TestNonReadingSubscriber (R9) (TestRobustSlowSubscriber)
//	  keepalive 0 or 65535                         TestKeepaliveCap
//	7 Authorisation (R12: users alice rw a/#, bob r b/+)                      TestACLBypass
//	  will topic (#503)                            bob's will on secret/x (TestAuthWillTopic)
//	  retained after ACL revoke (CVE-2018-12546)   subscriber side enforced; publisher side skipped: not enforced
//	  inflight and queued on resume (#504,         in-flight DUP resends and queued (TestAuthRecheckOnResume: queued)
//	  CVE-2021-34434)
//	  client-id takeover across users (#398)       v5 0x87, 3.1.1 5 (TestAuthSessionTakeover)
//	  $share group theft, raw-filter mismatch      $share/alice-workers/a/#, $share/g/secret/# (TestAuthACLRules "shared subscriptions")
//	  $SYS via $share/g/#                          "$SYS: ..." (TestRobustSysTopicsIsolated)
//	  wildcard identity (CVE-2017-7650)            client ids +, #, a/b with c/%c/# (TestAuthACLRules "wildcard client id")
//	  ACL matcher prefix bugs                      ab/x vs a/#, b/x/y vs b/+ (auth/acl_test.go, FuzzACLMatch)
//	  default allow on no match                    carol (no rule), anonymous
//	  $SYS publishing                              refused even when the ACL allows it (TestPublishToSysRefused)
//	  every denial logged and counted              mote_acl_denied_total, "acl denied" log lines
//	  3.1.1 refusals close without a DISCONNECT    bob's 3.1.1 publish (3.1.1 has no server DISCONNECT)
//	  property test against a reference matcher    auth (FuzzACLMatch, TestSubsetOverlapExhaustive): not repeated here
//
// Skipped cases say why in their message: the per-user retained cap (in
// the auth hook, but no configuration key reaches it yet), the
// retained-source recheck (CVE-2018-12546, publisher side), and retained
// messages beyond the write and session queues on SUBSCRIBE (dropped and
// counted, not all delivered). Each turns into a pass, not a skip, once
// the broker does it.
package reliability
