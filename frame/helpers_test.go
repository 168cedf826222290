package frame

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Byte builders for hand-made packets.

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func b(bs ...byte) []byte { return bs }

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// vbi encodes n as a minimal Variable Byte Integer.
func vbi(n int) []byte {
	var out []byte
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		out = append(out, c)
		if n == 0 {
			return out
		}
	}
}

// s encodes a string or binary field: two-byte length, then the bytes.
func s(str string) []byte { return append(u16(uint16(len(str))), str...) }

// pk builds a packet from its first byte and body parts, computing the
// Remaining Length.
func pk(first byte, body ...[]byte) []byte {
	bd := cat(body...)
	return cat(b(first), vbi(len(bd)), bd)
}

// plist builds a property list: Property Length, then the properties.
func plist(ps ...[]byte) []byte {
	bd := cat(ps...)
	return cat(vbi(len(bd)), bd)
}

func user(k, v string) []byte { return cat(b(propUser), s(k), s(v)) }

func connect3(flags byte, payload ...[]byte) []byte {
	return pk(0x10, s("MQIsdp"), b(3, flags), u16(30), cat(payload...))
}

func connect4(flags byte, payload ...[]byte) []byte {
	return pk(0x10, s("MQTT"), b(4, flags), u16(30), cat(payload...))
}

func connect5(flags byte, ps []byte, payload ...[]byte) []byte {
	return pk(0x10, s("MQTT"), b(5, flags), u16(30), ps, cat(payload...))
}

// minimalConnect is an accepted CONNECT of each protocol level.
func minimalConnect(ver byte) []byte {
	switch ver {
	case 3:
		return connect3(0x02, s("c3"))
	case 4:
		return connect4(0x02, s("c4"))
	case 5:
		return connect5(0x02, plist(), s("c5"))
	}
	panic("bad version")
}

// mochiDecode decodes pkt the way mochi's Client.ReadFixedHeader and
// Client.ReadPacket do (clients.go, v2.7.9), for a client whose accepted
// CONNECT had protocol level ver (0 before the CONNECT). A panic in a mochi
// decoder is returned as an error.
func mochiDecode(ver byte, pkt []byte) (p packets.Packet, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("mochi panicked: %v", r)
		}
	}()
	if len(pkt) == 0 {
		return p, fmt.Errorf("empty packet")
	}
	fh := new(packets.FixedHeader)
	if err := fh.Decode(pkt[0]); err != nil {
		return p, fmt.Errorf("FixedHeader.Decode: %w", err)
	}
	rd := bytes.NewReader(pkt[1:])
	rem, bu, err := packets.DecodeLength(rd)
	if err != nil {
		return p, fmt.Errorf("DecodeLength: %w", err)
	}
	fh.Remaining = rem
	if 1+bu+rem != len(pkt) {
		return p, fmt.Errorf("mochi reads a remaining length of %d (%d bytes) for a %d-byte packet", rem, bu, len(pkt))
	}
	p.ProtocolVersion = ver
	p.FixedHeader = *fh
	px := append([]byte{}, pkt[1+bu:]...)
	switch fh.Type {
	case packets.Connect:
		err = p.ConnectDecode(px)
	case packets.Disconnect:
		err = p.DisconnectDecode(px)
	case packets.Connack:
		err = p.ConnackDecode(px)
	case packets.Publish:
		err = p.PublishDecode(px)
	case packets.Puback:
		err = p.PubackDecode(px)
	case packets.Pubrec:
		err = p.PubrecDecode(px)
	case packets.Pubrel:
		err = p.PubrelDecode(px)
	case packets.Pubcomp:
		err = p.PubcompDecode(px)
	case packets.Subscribe:
		err = p.SubscribeDecode(px)
	case packets.Suback:
		err = p.SubackDecode(px)
	case packets.Unsubscribe:
		err = p.UnsubscribeDecode(px)
	case packets.Unsuback:
		err = p.UnsubackDecode(px)
	case packets.Pingreq, packets.Pingresp:
	case packets.Auth:
		err = p.AuthDecode(px)
	default:
		err = fmt.Errorf("invalid packet type; %v", fh.Type)
	}
	return p, err
}

// mochiValidate runs mochi's own post-decode validation for an accepted
// packet (server.go processPacket / validateConnect) and reports anything
// other than the known, spec-permitted differences.
func mochiValidate(p packets.Packet, topicAliasMaximum uint16) error {
	var code packets.Code
	switch p.FixedHeader.Type {
	case packets.Connect:
		code = p.ConnectValidate()
		// mochi refuses two things MQTT allows: a zero-length Will Payload
		// (§3.1.3.4 Binary Data may be empty) and a zero-length Password.
		if code == packets.ErrProtocolViolationWillFlagNoPayload && len(p.Connect.WillPayload) == 0 {
			return nil
		}
		if code == packets.ErrProtocolViolationFlagNoPassword && len(p.Connect.Password) == 0 {
			return nil
		}
	case packets.Publish:
		code = p.PublishValidate(topicAliasMaximum)
	case packets.Subscribe:
		code = p.SubscribeValidate()
	case packets.Unsubscribe:
		code = p.UnsubscribeValidate()
	case packets.Auth:
		code = p.AuthValidate()
	default:
		return nil
	}
	if code != packets.CodeSuccess {
		return fmt.Errorf("mochi validation: %v", code)
	}
	return nil
}

// encode runs one of mochi's encoders.
func encode(p packets.Packet) []byte {
	var buf bytes.Buffer
	var err error
	switch p.FixedHeader.Type {
	case packets.Connect:
		err = p.ConnectEncode(&buf)
	case packets.Publish:
		err = p.PublishEncode(&buf)
	case packets.Puback:
		err = p.PubackEncode(&buf)
	case packets.Pubrec:
		err = p.PubrecEncode(&buf)
	case packets.Pubrel:
		err = p.PubrelEncode(&buf)
	case packets.Pubcomp:
		err = p.PubcompEncode(&buf)
	case packets.Subscribe:
		err = p.SubscribeEncode(&buf)
	case packets.Unsubscribe:
		err = p.UnsubscribeEncode(&buf)
	case packets.Pingreq:
		err = p.PingreqEncode(&buf)
	case packets.Disconnect:
		err = p.DisconnectEncode(&buf)
	case packets.Auth:
		err = p.AuthEncode(&buf)
	default:
		err = fmt.Errorf("no encoder for type %d", p.FixedHeader.Type)
	}
	if err != nil {
		panic(err)
	}
	return buf.Bytes()
}
