// Command driver runs one github.com/vacp2p/mvds v0.0.25 node (Metadata: parents, ephemeral
// messages, dependency resolution) and bridges its transport to stdin and stdout, so that the
// Python tests can put our engine on the other side. v0.0.25's generated code numbers the fields
// 1..4; with -wire=spec (the default) the payloads cross in the spec's numbers (wire.go), with
// -wire=native as proto.Marshal writes them.
//
// Frames in both directions: a 4-byte big-endian length, then a type byte and its data.
//
//	stdin  'P' payload   a payload from the other peer, as protobuf bytes
//	stdin  'A' body      AppendMessage(group, body); answered with 'I'
//	stdin  'F' body      AppendEphemeralMessage(group, body); answered with 'I'
//	stdin  'Q'           stop
//	stdout 'R'           the node is started
//	stdout 'P' payload   a payload the node sends to the other peer
//	stdout 'I' id        the 32-byte ID AppendMessage returned
//	stdout 'D' id msg    a message the node's subscription received: its ID, then the message
//	                     as protobuf bytes (spec numbers)
//	stdout 'E' text      an error, then the driver exits
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/golang/protobuf/proto"
	"github.com/vacp2p/mvds/dependency"
	"github.com/vacp2p/mvds/node"
	"github.com/vacp2p/mvds/peers"
	"github.com/vacp2p/mvds/protobuf"
	"github.com/vacp2p/mvds/state"
	"github.com/vacp2p/mvds/store"
	"github.com/vacp2p/mvds/transport"
)

const maxFrame = 4 << 20

// bridge is the node's transport.Transport: Send writes to stdout, Watch reads what stdin brought.
type bridge struct {
	spec   bool
	out    *output
	other  state.PeerID
	silent map[state.PeerID]bool
	in     chan transport.Packet
}

func (b *bridge) Watch() transport.Packet { return <-b.in }

func (b *bridge) Send(_ state.PeerID, peer state.PeerID, payload protobuf.Payload) error {
	if b.silent[peer] {
		return nil // a member that is never online
	}
	if peer != b.other {
		return fmt.Errorf("peer unknown: %x", peer[:4])
	}
	if b.spec {
		b.out.frame('P', encodeSpec(&payload))
		return nil
	}
	data, err := proto.Marshal(&payload)
	if err != nil {
		return err
	}
	b.out.frame('P', data)
	return nil
}

type output struct {
	sync.Mutex
	w *bufio.Writer
}

func (o *output) frame(kind byte, parts ...[]byte) {
	o.Lock()
	defer o.Unlock()
	n := 1
	for _, p := range parts {
		n += len(p)
	}
	var head [5]byte
	binary.BigEndian.PutUint32(head[:4], uint32(n))
	head[4] = kind
	o.w.Write(head[:])
	for _, p := range parts {
		o.w.Write(p)
	}
	o.w.Flush()
}

func fail(out *output, err error) {
	out.frame('E', []byte(err.Error()))
	os.Exit(1)
}

func peerID(s string) (state.PeerID, error) {
	var id state.PeerID
	raw, err := hex.DecodeString(s)
	if err != nil || len(raw) != len(id) {
		return id, fmt.Errorf("a peer ID is %d bytes of hex: %q", len(id), s)
	}
	copy(id[:], raw)
	return id, nil
}

func main() {
	self := flag.String("self", "", "this node's peer ID (65 bytes, hex)")
	other := flag.String("peer", "", "the other node's peer ID (65 bytes, hex)")
	group := flag.String("group", "", "the group ID (32 bytes, hex)")
	mode := flag.String("mode", "batch", "batch or interactive")
	epoch := flag.Duration("epoch", 20*time.Millisecond, "the epoch length")
	gap := flag.Int64("gap", 2, "epochs between retransmissions")
	resolution := flag.String("resolution", "eventual", "eventual or consistent")
	silent := flag.String("silent", "", "another member of the group, never online (65 bytes, hex)")
	wire := flag.String("wire", "spec", "spec (5001/6001 numbers) or native (v0.0.25's 1..4)")
	flag.Parse()

	out := &output{w: bufio.NewWriter(os.Stdout)}
	me, err := peerID(*self)
	if err != nil {
		fail(out, err)
	}
	them, err := peerID(*other)
	if err != nil {
		fail(out, err)
	}
	var gid state.GroupID
	raw, err := hex.DecodeString(*group)
	if err != nil || len(raw) != len(gid) {
		fail(out, fmt.Errorf("the group ID is 32 bytes of hex"))
	}
	copy(gid[:], raw)
	m := node.BatchMode
	if *mode == "interactive" {
		m = node.InteractiveMode
	} else if *mode != "batch" {
		fail(out, fmt.Errorf("mode is batch or interactive, not %q", *mode))
	}
	r := node.EventualMode
	if *resolution == "consistent" {
		r = node.ConsistentMode
	} else if *resolution != "eventual" {
		fail(out, fmt.Errorf("resolution is eventual or consistent, not %q", *resolution))
	}
	if *wire != "spec" && *wire != "native" {
		fail(out, fmt.Errorf("wire is spec or native, not %q", *wire))
	}

	b := &bridge{
		spec: *wire == "spec", out: out, other: them,
		silent: map[state.PeerID]bool{}, in: make(chan transport.Packet, 64),
	}
	next := func(count uint64, epoch int64) int64 { return *gap }
	// NewEphemeralNode leaves the resolution mode unset (it then resolves consistently), so
	// the in-memory node is put together from the same parts with the mode chosen.
	n := node.NewNode(
		store.NewMemoryMessageStore(), b, state.NewMemorySyncState(), next, 0, me, m,
		peers.NewMemoryPersistence(), dependency.NewInMemoryTracker(), r, nil,
	)
	if err := n.AddPeer(gid, them); err != nil {
		fail(out, err)
	}
	if *silent != "" {
		id, err := peerID(*silent)
		if err != nil {
			fail(out, err)
		}
		b.silent[id] = true
		if err := n.AddPeer(gid, id); err != nil {
			fail(out, err)
		}
	}
	sub := n.Subscribe()
	go func() {
		for msg := range sub {
			id := msg.ID()
			out.frame('D', id[:], encodeMessage(&msg))
		}
	}()
	n.Start(*epoch)
	out.frame('R')

	in := bufio.NewReader(os.Stdin)
	var head [4]byte
	for {
		if _, err := io.ReadFull(in, head[:]); err != nil {
			return // stdin closed: the test is over
		}
		size := binary.BigEndian.Uint32(head[:])
		if size < 1 || size > maxFrame {
			fail(out, fmt.Errorf("frame of %d bytes", size))
		}
		frame := make([]byte, size)
		if _, err := io.ReadFull(in, frame); err != nil {
			return
		}
		switch frame[0] {
		case 'P':
			var p protobuf.Payload
			if b.spec {
				decoded, err := decodeSpec(frame[1:])
				if err != nil {
					fail(out, fmt.Errorf("payload from the peer does not decode: %w", err))
				}
				p = *decoded
			} else if err := proto.Unmarshal(frame[1:], &p); err != nil {
				fail(out, fmt.Errorf("payload from the peer does not decode: %w", err))
			}
			b.in <- transport.Packet{Sender: them, Payload: p}
		case 'A':
			id, err := n.AppendMessage(gid, frame[1:])
			if err != nil {
				fail(out, err)
			}
			out.frame('I', id[:])
		case 'F':
			id, err := n.AppendEphemeralMessage(gid, frame[1:])
			if err != nil {
				fail(out, err)
			}
			out.frame('I', id[:])
		case 'Q':
			return
		default:
			fail(out, fmt.Errorf("unknown frame type %q", frame[0]))
		}
	}
}
