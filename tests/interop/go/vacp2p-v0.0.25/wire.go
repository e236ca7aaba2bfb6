package main

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/vacp2p/mvds/protobuf"
)

// v0.0.25 generates its protobuf types with the field numbers 1..4 (changed in v0.0.24 and
// reverted only on the unreleased branch revert/field-number); 2/MVDS, 4/MVDS-META and the
// Status app use 5001-5004, 6001-6004. With -wire=spec the driver writes and reads the node's
// own Go values in the spec's numbers, field for field, as that branch's generated code does.

const (
	payloadAcks     = 5001
	payloadOffers   = 5002
	payloadRequests = 5003
	payloadMessages = 5004
	messageGroupID  = 6001
	messageTime     = 6002
	messageBody     = 6003
	messageMetadata = 6004
	metadataParents = 1
	metadataEphem   = 2
)

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func encodeMetadata(m *protobuf.Metadata) []byte {
	var b []byte
	for _, p := range m.Parents {
		b = appendBytes(b, metadataParents, p)
	}
	if m.Ephemeral {
		b = protowire.AppendTag(b, metadataEphem, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b
}

func encodeMessage(m *protobuf.Message) []byte {
	var b []byte
	if len(m.GroupId) > 0 {
		b = appendBytes(b, messageGroupID, m.GroupId)
	}
	if m.Timestamp != 0 {
		b = protowire.AppendTag(b, messageTime, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.Timestamp))
	}
	if len(m.Body) > 0 {
		b = appendBytes(b, messageBody, m.Body)
	}
	if m.Metadata != nil {
		b = appendBytes(b, messageMetadata, encodeMetadata(m.Metadata))
	}
	return b
}

func encodeSpec(p *protobuf.Payload) []byte {
	var b []byte
	for _, id := range p.Acks {
		b = appendBytes(b, payloadAcks, id)
	}
	for _, id := range p.Offers {
		b = appendBytes(b, payloadOffers, id)
	}
	for _, id := range p.Requests {
		b = appendBytes(b, payloadRequests, id)
	}
	for _, m := range p.Messages {
		b = appendBytes(b, payloadMessages, encodeMessage(m))
	}
	return b
}

// fields calls f for each field of b; f returns how many bytes of the value it consumed, or -1
// to skip it.
func fields(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte) (int, error)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		used, err := f(num, typ, b)
		if err != nil {
			return err
		}
		if used < 0 {
			used = protowire.ConsumeFieldValue(num, typ, b)
			if used < 0 {
				return protowire.ParseError(used)
			}
		}
		b = b[used:]
	}
	return nil
}

func bytesField(typ protowire.Type, v []byte) ([]byte, int, error) {
	if typ != protowire.BytesType {
		return nil, 0, fmt.Errorf("wire type %d where bytes were expected", typ)
	}
	val, n := protowire.ConsumeBytes(v)
	if n < 0 {
		return nil, 0, protowire.ParseError(n)
	}
	return append([]byte(nil), val...), n, nil
}

func decodeMetadata(b []byte) (*protobuf.Metadata, error) {
	m := &protobuf.Metadata{}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte) (int, error) {
		switch {
		case num == metadataParents:
			val, n, err := bytesField(typ, v)
			m.Parents = append(m.Parents, val)
			return n, err
		case num == metadataEphem && typ == protowire.VarintType:
			val, n := protowire.ConsumeVarint(v)
			if n < 0 {
				return 0, protowire.ParseError(n)
			}
			m.Ephemeral = val != 0
			return n, nil
		}
		return -1, nil
	})
	return m, err
}

func decodeMessage(b []byte) (*protobuf.Message, error) {
	m := &protobuf.Message{}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte) (int, error) {
		switch num {
		case messageGroupID:
			val, n, err := bytesField(typ, v)
			m.GroupId = val
			return n, err
		case messageTime:
			if typ != protowire.VarintType {
				return 0, fmt.Errorf("timestamp of wire type %d", typ)
			}
			val, n := protowire.ConsumeVarint(v)
			if n < 0 {
				return 0, protowire.ParseError(n)
			}
			m.Timestamp = int64(val)
			return n, nil
		case messageBody:
			val, n, err := bytesField(typ, v)
			m.Body = val
			return n, err
		case messageMetadata:
			val, n, err := bytesField(typ, v)
			if err != nil {
				return 0, err
			}
			m.Metadata, err = decodeMetadata(val)
			return n, err
		}
		return -1, nil
	})
	return m, err
}

func decodeSpec(b []byte) (*protobuf.Payload, error) {
	p := &protobuf.Payload{}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte) (int, error) {
		if num < payloadAcks || num > payloadMessages {
			return -1, nil
		}
		val, n, err := bytesField(typ, v)
		if err != nil {
			return 0, err
		}
		switch num {
		case payloadAcks:
			p.Acks = append(p.Acks, val)
		case payloadOffers:
			p.Offers = append(p.Offers, val)
		case payloadRequests:
			p.Requests = append(p.Requests, val)
		case payloadMessages:
			m, err := decodeMessage(val)
			if err != nil {
				return 0, err
			}
			p.Messages = append(p.Messages, m)
		}
		return n, nil
	})
	return p, err
}
