// Package retaingate works around a data race in mochi v2.7.9 by wrapping
// it with two hooks, without copying or forking mochi.
//
// # The race
//
// mochi's topic index keeps, on each topic's node, the path of its retained
// message (particle.retainPath). TopicsIndex.RetainMessage writes it under
// the index lock; TopicsIndex.Messages (scanMessages) reads it with no lock
// when it looks up the retained messages of a filter with a wildcard. The
// readers are processSubscribe (publishRetainedToClient, after the SUBACK)
// and the inline Server.Subscribe; the writers are processPublish (also for
// the inline client's Publish and InjectPacket), sendLWT and sendDelayedLWT
// (retained wills), publishSysTopics ($SYS/broker/*, from the event loop
// every sys_interval and once at Serve) and the restore at start-up. So a
// wildcard SUBSCRIBE racing a retained PUBLISH or clear reads a string
// while it is written: a -race report, and a torn string can crash.
//
// # The gate
//
// A lock with two shared classes keeps the readers apart from the writers:
// scans run together, retained writes run together, a scan and a write
// never do (classLock; it is fair between the classes, so neither starves).
// Head must be registered before every other hook and Tail after every
// other hook.
//
//   - A retained write takes the retain class in Tail.OnPublish, the last
//     OnPublish hook, so it sees the packet mochi goes on with and no other
//     hook (the persistence barrier's wait for the durability point in
//     particular) runs while the class is held; only a packet that mochi
//     will retain (Retain set, not Ignore, retain available) takes it. mochi
//     then runs retainMessage's checks and TopicsIndex.RetainMessage, and
//     calls OnRetainMessage, where Head, the first such hook, releases it.
//     A retained will sent at once does the same from Tail.OnWill: sendLWT
//     goes from OnWill straight to retainMessage.
//   - To tell its own writes from others in OnRetainMessage without
//     goroutine identity (the inline client publishes from many goroutines
//     at once, and some writes are not gated, below), Tail gives the packet
//     a payload buffer of its own and records its address; OnRetainMessage
//     releases only a recorded address. Copies of the packet (Packet.Copy)
//     have other buffers, and nobody else sees the buffer before mochi's
//     write, so no other packet can release the class early.
//   - A SUBSCRIBE whose granted filters mochi will look up in the index (a
//     wildcard, not shared, retain handling not 2) takes the scan class in
//     Head.OnPacketSent once its SUBACK is written, and releases it in
//     Head.OnPacketProcessed, which mochi calls after the retained
//     messages are queued. Taking it after the SUBACK keeps a client that
//     does not read from holding up retained publishes. Plain filters are
//     looked up in the locked map of retained messages and take nothing.
//   - mochi's $SYS ticker writes with no hook before it, so it cannot be
//     gated. A wildcard scan reaches $SYS only for a filter whose first
//     level is "$SYS" (mochi skips $SYS under a first-level wildcard), so
//     for those filters Tail.OnSubscribe sets retain handling 2, and mochi
//     does not scan; Head.OnPacketProcessed sends the matching retained
//     messages itself (Matching, from the locked map) with the retain
//     handling the client asked for ([MQTT-3.3.1-9]..[MQTT-3.3.1-11]), No
//     Local, the ACL (Options.CanDeliver) and the subscription identifier,
//     at QoS 0, and puts the asked retain handling back in the client's
//     subscription.
//
// A publish that is not retained costs one flag test (Tail.OnPublish);
// every packet sent or processed costs a packet type test (Head).
//
// # Why it cannot deadlock
//
// Lock order: the gate's class is taken with nothing of the gate held
// (Gate.mu is only held around its maps, never while waiting), and:
//
//   - Between taking the retain class (Tail.OnPublish or Tail.OnWill, each
//     the last hook) and releasing it (Head.OnRetainMessage, the first
//     hook), mochi runs no hook at all: only its own checks and
//     TopicsIndex.RetainMessage, which takes the index's locks and nothing
//     else. So a write holds nothing while it waits, and nothing waits while
//     it holds: a hook that publishes (Mote's rules engine and bridges do,
//     through the inline client) does so from OnPublish before Tail's
//     acquisition, or after the release.
//   - The scan class is held while mochi queues the retained messages
//     (publishRetainedToClient: OnACLCheck, OnQosPublish, OnPublishDropped,
//     OnRetainPublished) and runs nothing of the gate's. A hook must not
//     publish a retained message or send a will synchronously from those
//     callbacks: it would wait for its own scan. Mote's hooks do not (the
//     rules engine queues its events; persistence sends from its pumps).
//   - The SUBSCRIBE's own goroutine waits in OnPacketSent holding no lock
//     (mochi has released the client's write lock). mochi's event loop
//     waits on the gate only where a hook publishes a retained message from
//     it (Mote's $SYS publishers are not retained), and then only for scans,
//     which never wait for the event loop.
//
// # What it does not cover
//
//   - A publish that an OnPublish hook before Tail fails with an error
//     mochi goes on after (for QoS 0 or MQTT 3.1.1, anything but
//     ErrRejectPacket and CodeSuccessIgnore; for MQTT 5 QoS 1/2, anything
//     that is not a reason code): mochi retains it with Tail skipped. Hooks
//     refuse with those errors instead (Mote's do); Head counts such writes
//     (Gate.Ungated) and logs them.
//   - A retained will with a Will Delay Interval: mochi's event loop
//     retains it (sendDelayedLWT) with no hook before the write, and it can
//     land on any topic. Covering it would mean re-implementing will delay
//     (or delivering it without its retain flag): not done.
//   - The inline client's subscriptions (Server.Subscribe, or a SUBSCRIBE
//     through InjectPacket): Server.Subscribe calls no hook after its scan.
//     Mote makes none.
//   - Readers outside mochi's packet path, such as a direct call to
//     TopicsIndex.Messages: use Matching instead.
//   - The restore at start-up writes before anything is served.
//
// Mote's stored subscription record (persistence, written in OnSubscribed)
// of a $SYS wildcard filter says retain handling 2; the handling only
// matters when the subscription is made.
package retaingate
