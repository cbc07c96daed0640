package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

// Feature levels. A level is what every voter must support before the
// leader writes anything that needs it; the cluster's level (State.Level)
// rises by a SetLevel command once every voter's binary supports the next
// one, and never falls.
const (
	// LevelLegacy is the log of lifeboat 0.1: one union JSON Command per
	// entry. Versions before feature levels are at this level.
	LevelLegacy = state.LevelLegacy
	// LevelTyped: typed, versioned commands in an envelope; batches;
	// readiness proven again after a node changes version; snapshots that
	// older versions refuse to read; failure marks that expire.
	LevelTyped = state.LevelTyped
	// MaxLevel is the highest level this binary supports.
	MaxLevel = LevelTyped
)

// typedMagic starts every typed log entry (a legacy entry starts with '{').
const typedMagic byte = 0x02

// envelope carries one typed command.
type envelope struct {
	Kind string `json:"kind"`
	// V is the schema version of this kind.
	V int `json:"v"`
	// Ignorable: a node that does not know this kind may skip it without
	// diverging (it changes nothing placement or fencing reads).
	Ignorable bool            `json:"ignorable,omitempty"`
	Time      time.Time       `json:"time"`
	Body      json.RawMessage `json:"body"`
}

// kindInfo describes a registered kind.
type kindInfo struct {
	// v is the schema version this binary writes and reads up to.
	v int
	// level is the feature level the cluster must be at before the kind
	// is written (LevelLegacy: it also has a legacy form).
	level     int
	ignorable bool
	decode    func(json.RawMessage) (Cmd, error)
}

func decodeAs[T Cmd](b json.RawMessage) (Cmd, error) {
	var c T
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	return c, nil
}

var kinds = map[string]kindInfo{
	PutHierarchies{}.Kind(): {v: 1, level: LevelLegacy, decode: decodeAs[PutHierarchies]},
	Delete{}.Kind():         {v: 1, level: LevelLegacy, decode: decodeAs[Delete]},
	Purge{}.Kind():          {v: 1, level: LevelLegacy, decode: decodeAs[Purge]},
	SetOnline{}.Kind():      {v: 1, level: LevelLegacy, decode: decodeAs[SetOnline]},
	Assign{}.Kind():         {v: 1, level: LevelLegacy, decode: decodeAs[Assign]},
	RequestMove{}.Kind():    {v: 1, level: LevelLegacy, decode: decodeAs[RequestMove]},
	Report{}.Kind():         {v: 1, level: LevelLegacy, decode: decodeAs[Report]},
	Revoke{}.Kind():         {v: 1, level: LevelLegacy, decode: decodeAs[Revoke]},
	Release{}.Kind():        {v: 1, level: LevelLegacy, decode: decodeAs[Release]},
	Join{}.Kind():           {v: 1, level: LevelLegacy, decode: decodeAs[Join]},
	Leaving{}.Kind():        {v: 1, level: LevelLegacy, decode: decodeAs[Leaving]},
	SetReadiness{}.Kind():   {v: 1, level: LevelLegacy, decode: decodeAs[SetReadiness]},
	// Findings are informational (status and doctor): a node that does
	// not know a newer form can skip them without diverging on anything
	// placement reads.
	SetFindings{}.Kind(): {v: 1, level: LevelLegacy, ignorable: true, decode: decodeAs[SetFindings]},
	// SetLevel is written only once every voter supports the level it
	// sets, so it is always typed.
	SetLevel{}.Kind(): {v: 1, level: LevelTyped, decode: decodeAs[SetLevel]},
	// Failure marks expire from level 2 on.
	ExpireMark{}.Kind():         {v: 1, level: LevelTyped, decode: decodeAs[ExpireMark]},
	ConfirmFailover{}.Kind():    {v: 1, level: LevelTyped, decode: decodeAs[ConfirmFailover]},
	SetMaintenance{}.Kind():     {v: 1, level: LevelTyped, decode: decodeAs[SetMaintenance]},
	SetStandby{}.Kind():         {v: 1, level: LevelTyped, decode: decodeAs[SetStandby]},
	SetConfirmFailover{}.Kind(): {v: 1, level: LevelTyped, decode: decodeAs[SetConfirmFailover]},
	// The membership after a run-time change (lifeboat node add|remove).
	SetMembers{}.Kind(): {v: 1, level: LevelTyped, decode: decodeAs[SetMembers]},
	// A backup restored in one entry (lifeboat restore).
	Restore{}.Kind(): {v: 1, level: LevelTyped, decode: decodeAs[Restore]},
}

func init() {
	// A batch decodes its commands through kinds.
	kinds[Batch{}.Kind()] = kindInfo{v: 1, level: LevelTyped, decode: decodeBatch}
}

// batchBody is a Batch on the wire: one envelope per command.
type batchBody struct {
	Cmds []envelope `json:"cmds"`
}

func decodeBatch(b json.RawMessage) (Cmd, error) {
	var bb batchBody
	if err := json.Unmarshal(b, &bb); err != nil {
		return nil, err
	}
	out := Batch{}
	for i, e := range bb.Cmds {
		c, err := decodeEnvelope(e)
		if err != nil {
			return nil, fmt.Errorf("command %d of batch: %w", i, err)
		}
		if c != nil {
			out.Cmds = append(out.Cmds, c)
		}
	}
	return out, nil
}

// DecodeError is a log entry that does not decode: corrupt, or written by
// a version that encodes differently.
type DecodeError struct{ Err error }

func (e DecodeError) Error() string { return e.Err.Error() }
func (e DecodeError) Unwrap() error { return e.Err }

// UnknownCommandError is a command this binary cannot apply: a kind it
// does not know, or a newer schema of one it knows, written by a newer
// version. Applying on would diverge from the nodes that understood it.
type UnknownCommandError struct {
	Kind string
	V    int
}

func (e UnknownCommandError) Error() string {
	if _, ok := kinds[e.Kind]; ok {
		return fmt.Sprintf("command %q version %d is newer than this binary reads (up to %d): it was written by a newer lifeboat", e.Kind, e.V, kinds[e.Kind].v)
	}
	return fmt.Sprintf("unknown command %q (version %d): it was written by a newer lifeboat", e.Kind, e.V)
}

func decodeEnvelope(e envelope) (Cmd, error) {
	k, ok := kinds[e.Kind]
	if !ok || e.V > k.v {
		if e.Ignorable {
			return nil, nil
		}
		return nil, UnknownCommandError{Kind: e.Kind, V: e.V}
	}
	c, err := k.decode(e.Body)
	if err != nil {
		var de DecodeError
		if errors.As(err, &de) {
			return nil, err
		}
		return nil, DecodeError{fmt.Errorf("decode %s command: %w", e.Kind, err)}
	}
	return c, nil
}

func toEnvelope(c Cmd, at time.Time) (envelope, error) {
	k, ok := kinds[c.Kind()]
	if !ok {
		return envelope{}, fmt.Errorf("command kind %q is not registered", c.Kind())
	}
	var body any = c
	if b, ok := c.(Batch); ok {
		bb := batchBody{Cmds: []envelope{}}
		for _, sub := range b.Cmds {
			if _, nested := sub.(Batch); nested {
				return envelope{}, errors.New("a batch cannot hold a batch")
			}
			e, err := toEnvelope(sub, at)
			if err != nil {
				return envelope{}, err
			}
			bb.Cmds = append(bb.Cmds, e)
		}
		body = bb
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return envelope{}, fmt.Errorf("encode %s command: %w", c.Kind(), err)
	}
	return envelope{Kind: c.Kind(), V: k.v, Ignorable: k.ignorable, Time: at, Body: raw}, nil
}

// Encode writes c as a log entry for a cluster at feature level level:
// below LevelTyped in the legacy form every voter can read, from it on as
// a typed envelope. A kind that needs a higher level than level is an
// error (the caller must not use it yet).
func Encode(c Cmd, at time.Time, level int) ([]byte, error) {
	k, ok := kinds[c.Kind()]
	if !ok {
		return nil, fmt.Errorf("command kind %q is not registered", c.Kind())
	}
	if k.level > level && c.Kind() != (SetLevel{}).Kind() {
		return nil, fmt.Errorf("%s commands need cluster feature level %d (the cluster is at %d)", c.Kind(), k.level, level)
	}
	if level < LevelTyped && k.level <= LevelLegacy {
		lc, err := ToLegacy(c, at)
		if err != nil {
			return nil, err
		}
		return json.Marshal(lc)
	}
	e, err := toEnvelope(c, at)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode %s command: %w", c.Kind(), err)
	}
	return append([]byte{typedMagic}, b...), nil
}

// Decode reads a log entry in either form. A nil Cmd with a nil error is
// an ignorable command this binary does not know.
func Decode(b []byte) (Cmd, time.Time, error) {
	if len(b) > 0 && b[0] == typedMagic {
		var e envelope
		if err := json.Unmarshal(b[1:], &e); err != nil {
			return nil, time.Time{}, DecodeError{fmt.Errorf("decode command envelope: %w", err)}
		}
		c, err := decodeEnvelope(e)
		return c, e.Time, err
	}
	var lc Command
	if err := json.Unmarshal(bytes.TrimSpace(b), &lc); err != nil {
		return nil, time.Time{}, DecodeError{fmt.Errorf("decode legacy command: %w", err)}
	}
	c, err := FromLegacy(lc)
	return c, lc.Time, err
}

// DecodeWire reads a command forwarded between agents: a typed envelope
// (from a node of this version) or a legacy Command (from an older one).
func DecodeWire(b []byte) (Cmd, time.Time, error) {
	var probe struct {
		Kind string `json:"kind"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, time.Time{}, fmt.Errorf("decode forwarded command: %w", err)
	}
	if probe.Kind != "" {
		return Decode(append([]byte{typedMagic}, b...))
	}
	return Decode(b)
}

// EncodeWire writes a command to forward to the leader: typed when the
// cluster is at LevelTyped (every voter reads it), legacy otherwise.
//
// An older leader decodes a forwarded command strictly (unknown fields are
// an error), so the legacy wire form carries only what 0.1 knows.
func EncodeWire(c Cmd, at time.Time, level int) ([]byte, error) {
	if k, ok := kinds[c.Kind()]; ok && level < LevelTyped && k.level <= LevelLegacy {
		lc, err := ToLegacy(c, at)
		if err != nil {
			return nil, err
		}
		lc.Level = 0
		return json.Marshal(lc)
	}
	b, err := Encode(c, at, level)
	if err != nil {
		return nil, err
	}
	if len(b) > 0 && b[0] == typedMagic {
		return b[1:], nil
	}
	return b, nil
}

// Legacy command types (lifeboat 0.1's log).
const (
	CmdPutHierarchies = "put-hierarchies"
	CmdDelete         = "delete"
	CmdPurge          = "purge"
	CmdSetOnline      = "set-online"
	CmdAssign         = "assign"
	CmdRequestMove    = "request-move"
	CmdReport         = "report"
	CmdRevoke         = "revoke"
	CmdRelease        = "release"
	CmdJoin           = "join"
	CmdLeaving        = "leaving"
	CmdReadiness      = "readiness"
	CmdFindings       = "findings"
)

// Command is the legacy form of a replicated change: one union of every
// kind's fields, as lifeboat 0.1 wrote and forwarded it. It is read from
// old log entries and from older agents, and written while the cluster is
// below LevelTyped.
type Command struct {
	Type        string               `json:"type"`
	Hierarchies []spec.Hierarchy     `json:"hierarchies,omitempty"`
	Hierarchy   string               `json:"hierarchy,omitempty"`
	Node        string               `json:"node,omitempty"`
	Gen         uint64               `json:"gen,omitempty"`
	Epoch       uint64               `json:"epoch,omitempty"`
	Online      bool                 `json:"online,omitempty"`
	To          string               `json:"to,omitempty"`
	Reason      string               `json:"reason,omitempty"`
	Report      *HierarchyReport     `json:"report,omitempty"`
	Version     string               `json:"version,omitempty"`
	MarkFailed  bool                 `json:"mark_failed,omitempty"`
	ClearFailed bool                 `json:"clear_failed,omitempty"`
	Leaving     bool                 `json:"leaving,omitempty"`
	Time        time.Time            `json:"time"`
	Force       bool                 `json:"force,omitempty"`
	Findings    map[string]int       `json:"findings,omitempty"`
	Readiness   map[string]Readiness `json:"readiness,omitempty"`
	WatchdogMS  int64                `json:"watchdog_ms,omitempty"`
	// Level is new in 0.2: the joining node's highest feature level.
	// 0.1 ignores it in log entries but refuses it in a forwarded
	// command, so the legacy wire form leaves it out.
	Level int `json:"level,omitempty"`
}

// FromLegacy converts a legacy command to its typed form.
func FromLegacy(c Command) (Cmd, error) {
	switch c.Type {
	case CmdPutHierarchies:
		return PutHierarchies{Hierarchies: c.Hierarchies}, nil
	case CmdDelete:
		return Delete{Hierarchy: c.Hierarchy}, nil
	case CmdPurge:
		return Purge{Hierarchy: c.Hierarchy, Epoch: c.Epoch}, nil
	case CmdSetOnline:
		return SetOnline{Hierarchy: c.Hierarchy, Online: c.Online, ClearFailed: c.ClearFailed, Reason: c.Reason}, nil
	case CmdAssign:
		return Assign{Hierarchy: c.Hierarchy, Node: c.Node, Gen: c.Gen, Epoch: c.Epoch, MarkFailed: c.MarkFailed, Reason: c.Reason}, nil
	case CmdRequestMove:
		return RequestMove{Hierarchy: c.Hierarchy, To: c.To, Epoch: c.Epoch, Force: c.Force, ClearFailed: c.ClearFailed, Reason: c.Reason}, nil
	case CmdReport:
		if c.Report == nil {
			return nil, errors.New("report without body")
		}
		return Report{Node: c.Node, Hierarchy: c.Hierarchy, Report: *c.Report}, nil
	case CmdRevoke:
		return Revoke{Node: c.Node, Gen: c.Gen, Reason: c.Reason}, nil
	case CmdRelease:
		return Release{Node: c.Node, Gen: c.Gen, Reason: c.Reason}, nil
	case CmdJoin:
		return Join{Node: c.Node, Version: c.Version, Level: c.Level, WatchdogMS: c.WatchdogMS}, nil
	case CmdLeaving:
		return Leaving{Node: c.Node, Leaving: c.Leaving}, nil
	case CmdReadiness:
		return SetReadiness{Node: c.Node, Readiness: c.Readiness}, nil
	case CmdFindings:
		return SetFindings{Node: c.Node, Findings: c.Findings}, nil
	}
	return nil, UnknownCommandError{Kind: c.Type}
}

// ToLegacy converts a typed command to the legacy form (only kinds that
// lifeboat 0.1 knew have one).
func ToLegacy(c Cmd, at time.Time) (Command, error) {
	lc := Command{Type: c.Kind(), Time: at}
	switch c := c.(type) {
	case PutHierarchies:
		lc.Hierarchies = c.Hierarchies
	case Delete:
		lc.Hierarchy, lc.Reason = c.Hierarchy, "delete requested"
	case Purge:
		lc.Hierarchy, lc.Epoch = c.Hierarchy, c.Epoch
	case SetOnline:
		lc.Hierarchy, lc.Online, lc.ClearFailed, lc.Reason = c.Hierarchy, c.Online, c.ClearFailed, c.Reason
	case Assign:
		lc.Hierarchy, lc.Node, lc.Gen, lc.Epoch, lc.MarkFailed, lc.Reason = c.Hierarchy, c.Node, c.Gen, c.Epoch, c.MarkFailed, c.Reason
	case RequestMove:
		lc.Hierarchy, lc.To, lc.Epoch, lc.Force, lc.ClearFailed, lc.Reason = c.Hierarchy, c.To, c.Epoch, c.Force, c.ClearFailed, c.Reason
	case Report:
		r := c.Report
		lc.Node, lc.Hierarchy, lc.Report = c.Node, c.Hierarchy, &r
	case Revoke:
		lc.Node, lc.Gen, lc.Reason = c.Node, c.Gen, c.Reason
	case Release:
		lc.Node, lc.Gen, lc.Reason = c.Node, c.Gen, c.Reason
	case Join:
		lc.Node, lc.Version, lc.Level, lc.WatchdogMS = c.Node, c.Version, c.Level, c.WatchdogMS
	case Leaving:
		lc.Node, lc.Leaving = c.Node, c.Leaving
	case SetReadiness:
		lc.Node, lc.Readiness = c.Node, c.Readiness
	case SetFindings:
		lc.Node, lc.Findings = c.Node, c.Findings
	default:
		return Command{}, fmt.Errorf("%s commands have no legacy form", c.Kind())
	}
	return lc, nil
}
