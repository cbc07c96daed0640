package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

// Membership at run time.
//
// The static cluster.nodes of the agents' configs forms the cluster (raft
// bootstraps with it). Once an operator adds or removes a node, the
// membership is the replicated one (State.Members): every node reads the
// others' addresses from it, and a node started with cluster.join joins a
// running cluster instead of forming one.
//
// Raft's voter set changes one server at a time (AddNonvoter, then
// AddVoter once the new node has caught up; RemoveServer), so any two
// successive voter sets have intersecting majorities. The quorum leases
// count majorities of raft's latest voter set, and a voter grants a
// renewal only when the asker counts the same set (RenewRequest.Voters):
// once a change has committed, a majority of the new set has it, so no
// majority of the old set grants any more. Before each voter change the
// leader waits one lease threshold: every lease granted under the set
// before the last change has then run out, and an attestation by a
// majority of the new set intersects every majority that granted a live
// lease (under the current set or the one before it).

// SetMembers records the membership after a run-time change: the whole
// list, and which node was added or removed. A removed node's state
// (generation, reports) is forgotten; removing a node that a hierarchy
// lists, or that holds one, is refused. Feature level 2.
type SetMembers struct {
	Members []state.Member `json:"members"`
	Added   string         `json:"added,omitempty"`
	Removed string         `json:"removed,omitempty"`
	By      string         `json:"by,omitempty"`
	Reason  string         `json:"reason,omitempty"`
}

// Kind implements Cmd.
func (SetMembers) Kind() string { return "members" }

func (c SetMembers) apply(s *State, at time.Time) Result {
	if len(c.Members) == 0 {
		return Result{Err: errors.New("members: the membership cannot be empty")}
	}
	seen := map[string]bool{}
	for _, m := range c.Members {
		if m.Name == "" || m.Raft == "" || m.Gossip == "" || m.API == "" {
			return Result{Err: fmt.Errorf("members: node %q lacks a name or an address", m.Name)}
		}
		if seen[m.Name] {
			return Result{Err: fmt.Errorf("members: node %q is listed twice", m.Name)}
		}
		seen[m.Name] = true
	}
	if r := c.Removed; r != "" {
		if seen[r] {
			return Result{Err: fmt.Errorf("members: %s is removed but still listed", r)}
		}
		if hs := listing(s, r); len(hs) > 0 {
			return Result{Err: fmt.Errorf("members: %s is in the node list of %s", r, strings.Join(hs, ", "))}
		}
		delete(s.Nodes, r)
	}
	s.Members = slices.Clone(c.Members)
	s.MembersChanged = &Hold{Since: at.UTC(), By: c.By, Reason: c.Reason}
	return Result{Changed: true}
}

// listing returns the hierarchies that list node, or that it holds.
func listing(s *State, node string) []string {
	var out []string
	for _, name := range s.HierarchyNames() {
		as := s.Assignments[name]
		if slices.Contains(s.Hierarchies[name].Nodes, node) || (as != nil && as.Node == node) {
			out = append(out, name)
		}
	}
	return out
}

func toState(m Member) state.Member {
	return state.Member{Name: m.Name, Witness: m.Witness, Raft: m.Raft, Gossip: m.Gossip, API: m.API}
}

func fromState(m state.Member) Member {
	return Member{Name: m.Name, Witness: m.Witness, Raft: m.Raft, Gossip: m.Gossip, API: m.API}
}

// MemberList returns the membership: the replicated one once a run-time
// change set it, else the static one this node was configured with.
func (c *Cluster) MemberList() []Member {
	var out []Member
	for _, m := range c.FSM.Members() {
		out = append(out, fromState(m))
	}
	if len(out) > 0 {
		return out
	}
	return slices.Clone(c.cfg.Members)
}

// Member returns the member by name.
func (c *Cluster) Member(name string) (Member, bool) {
	for _, m := range c.MemberList() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// MemberAddr reports whether ip is the address of a member (the host of
// its raft, gossip or API address, when given as an IP): the connection
// caps keep a budget for the members (connlimit.Config.Reserved).
func (c *Cluster) MemberAddr(ip netip.Addr) bool {
	for _, m := range append(c.MemberList(), c.cfg.Members...) {
		for _, a := range []string{m.Raft, m.Gossip, m.API} {
			if ap, err := netip.ParseAddrPort(a); err == nil && ap.Addr().Unmap() == ip {
				return true
			}
		}
	}
	return false
}

// Removed reports whether this node was removed from the cluster (lifeboat
// node remove): the replicated membership no longer lists it.
func (c *Cluster) Removed() bool {
	ms := c.FSM.Members()
	return len(ms) > 0 && !slices.ContainsFunc(ms, func(m state.Member) bool { return m.Name == c.cfg.Node })
}

// Suffrage returns each server of raft's latest configuration (as this
// node knows it) with "voter" or "nonvoter".
func (c *Cluster) Suffrage() map[string]string {
	out := map[string]string{}
	for _, s := range c.Raft.GetConfiguration().Configuration().Servers {
		if s.Suffrage == raft.Voter {
			out[string(s.ID)] = "voter"
		} else {
			out[string(s.ID)] = "nonvoter"
		}
	}
	return out
}

// voters returns the voters of raft's latest configuration, sorted: the
// set the leases count majorities of.
func (c *Cluster) voters() []string {
	var out []string
	for _, s := range c.Raft.GetConfiguration().Configuration().Servers {
		if s.Suffrage == raft.Voter {
			out = append(out, string(s.ID))
		}
	}
	sort.Strings(out)
	return out
}

// AppliedFunc asks a node how far its replicated state has applied the
// raft log (its state's index).
type AppliedFunc func(ctx context.Context, m Member) (uint64, error)

// CatchUpTimeout is how long AddMember waits for the new node to catch
// up before it would promote it to voter.
var CatchUpTimeout = 25 * time.Second

// ErrHandedOver: the leader was asked to remove itself; it handed
// leadership to another voter, which is to be asked again.
var ErrHandedOver = errors.New("this node led the cluster and handed leadership over: ask the new leader")

// needMembership checks what every run-time change needs: leadership and
// feature level 2.
func (c *Cluster) needMembership() error {
	if !c.IsLeader() {
		return ErrNotLeader
	}
	if lvl := c.FSM.Level(); lvl < LevelTyped {
		return fmt.Errorf("membership changes need cluster feature level %d; the cluster is at %d: finish the upgrade first", LevelTyped, lvl)
	}
	return nil
}

// AddMember adds m to the cluster, on the leader: it records m in the
// replicated membership, adds it to raft as a non-voter, waits until its
// state has caught up (applied asks it), then, one lease threshold after
// the last voter change, promotes it to voter. Run again for a node that
// did not catch up, it resumes. progress hears each step.
func (c *Cluster) AddMember(ctx context.Context, m Member, by, reason string, applied AppliedFunc, progress func(string)) error {
	if err := c.needMembership(); err != nil {
		return err
	}
	c.changeMu.Lock()
	defer c.changeMu.Unlock()
	if progress == nil {
		progress = func(string) {}
	}
	if c.Suffrage()[m.Name] == "voter" {
		if cur, ok := c.Member(m.Name); ok && cur == m {
			return fmt.Errorf("node %s: %w (a voter with these addresses)", m.Name, ErrNoChange)
		}
		return fmt.Errorf("node %s is already a voter, with other addresses: remove it first (lifeboat node remove %s)", m.Name, m.Name)
	}
	list := c.MemberList()
	idx := c.FSM.Index()
	if i := slices.IndexFunc(list, func(x Member) bool { return x.Name == m.Name }); i >= 0 {
		if list[i] != m {
			return fmt.Errorf("node %s is already a member with raft %s, gossip %s, api %s: remove it first to change its addresses", m.Name, list[i].Raft, list[i].Gossip, list[i].API)
		}
		progress(fmt.Sprintf("%s is already in the membership; resuming", m.Name))
	} else {
		next := append(slices.Clone(list), m)
		if probs := config.ValidateMembers(next); len(probs) > 0 {
			return fmt.Errorf("adding %s would leave an invalid membership: %s", m.Name, strings.Join(probs, "; "))
		}
		var sm []state.Member
		for _, x := range next {
			sm = append(sm, toState(x))
		}
		_, i, err := c.Apply(SetMembers{Members: sm, Added: m.Name, By: by, Reason: reason}, 10*time.Second)
		if err != nil {
			return fmt.Errorf("record %s in the membership: %w", m.Name, err)
		}
		idx = i
		progress(fmt.Sprintf("recorded %s in the membership", m.Name))
	}
	if err := c.Raft.AddNonvoter(raft.ServerID(m.Name), raft.ServerAddress(m.Raft), 0, 10*time.Second).Error(); err != nil {
		return fmt.Errorf("add %s to raft as a non-voter: %w", m.Name, raftErr(err))
	}
	progress(fmt.Sprintf("added %s to raft as a non-voter; waiting for it to catch up", m.Name))
	if err := c.awaitCaughtUp(ctx, m, idx, applied); err != nil {
		return err
	}
	progress(fmt.Sprintf("%s caught up; promoting it to voter", m.Name))
	if err := c.voterChangeWait(ctx); err != nil {
		return err
	}
	if err := c.Raft.AddVoter(raft.ServerID(m.Name), raft.ServerAddress(m.Raft), 0, 10*time.Second).Error(); err != nil {
		return fmt.Errorf("promote %s to voter: %w", m.Name, raftErr(err))
	}
	c.cfg.Logger.Info("node added to the cluster", "node", m.Name, "witness", m.Witness, "by", by)
	return nil
}

// awaitCaughtUp waits until m's state has applied index idx.
func (c *Cluster) awaitCaughtUp(ctx context.Context, m Member, idx uint64, applied AppliedFunc) error {
	ctx, cancel := context.WithTimeout(ctx, CatchUpTimeout)
	defer cancel()
	var last string
	for {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		got, err := applied(actx, m)
		acancel()
		switch {
		case err == nil && got >= idx:
			return nil
		case err == nil:
			last = fmt.Sprintf("its state is at index %d of %d", got, idx)
		default:
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s did not catch up within %v (%s): is its agent running, with cluster.join: true, the cluster key and the addresses given here? It stays a non-voter, which votes on nothing: run the same lifeboat node add again once it runs, or lifeboat node remove %s",
				m.Name, CatchUpTimeout, last, m.Name)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// voterChangeWait makes the next voter change safe for the leases: this
// leader's log is applied (Barrier), and one lease threshold passes, after
// which no lease granted under the voter set before the last committed
// change is still running.
func (c *Cluster) voterChangeWait(ctx context.Context) error {
	if err := c.Raft.Barrier(10 * time.Second).Error(); err != nil {
		return fmt.Errorf("wait for the log to apply: %w", raftErr(err))
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(c.Leases.Threshold()):
	}
	if !c.IsLeader() {
		return ErrNotLeader
	}
	return nil
}

// RemoveMember removes a node from the cluster, on the leader. It is
// refused when the node is unknown, when a hierarchy lists it or it holds
// one, when the membership left would be invalid (two resource nodes
// without a witness), or when the voters left that are alive would not
// make a majority of them. A leader asked to remove itself hands
// leadership over (ErrHandedOver).
func (c *Cluster) RemoveMember(ctx context.Context, name, by, reason string) error {
	if err := c.needMembership(); err != nil {
		return err
	}
	c.changeMu.Lock()
	defer c.changeMu.Unlock()
	list := c.MemberList()
	suffrage := c.Suffrage()
	i := slices.IndexFunc(list, func(x Member) bool { return x.Name == name })
	if i < 0 && suffrage[name] == "" {
		e := UnknownMemberError{Name: name}
		for _, m := range list {
			e.Nodes = append(e.Nodes, m.Name)
		}
		return e
	}
	var hs []string
	c.FSM.View(func(s *State) { hs = listing(s, name) })
	if len(hs) > 0 {
		return fmt.Errorf("removing %s refused: hierarchies %s list it or run on it: take it out of their node lists first (edit and lifeboat apply)", name, strings.Join(hs, ", "))
	}
	if suffrage[name] == "voter" {
		var left, alive []string
		members := c.Members()
		for v, s := range suffrage {
			if s != "voter" || v == name {
				continue
			}
			left = append(left, v)
			if v == c.cfg.Node || members[v].State == "alive" {
				alive = append(alive, v)
			}
		}
		sort.Strings(left)
		sort.Strings(alive)
		if need := len(left)/2 + 1; len(alive) < need {
			return fmt.Errorf("removing %s refused: it would leave %d voters (%s) of which %d are alive (%s); a majority, %d, must be alive to keep quorum: bring the others back first",
				name, len(left), strings.Join(left, ", "), len(alive), strings.Join(alive, ", "), need)
		}
	}
	next := slices.Clone(list)
	if i >= 0 {
		next = slices.Delete(next, i, i+1)
		if len(next) == 0 {
			return fmt.Errorf("removing %s refused: it is the last node", name)
		}
		if probs := config.ValidateMembers(next); len(probs) > 0 {
			msg := strings.Join(probs, "; ")
			if list[i].Witness {
				msg = "it is the last witness beside two resource nodes, which then could not keep a majority when either fails (" + msg + "): add another node first"
			}
			return fmt.Errorf("removing %s refused: %s", name, msg)
		}
	}
	if name == c.cfg.Node {
		if err := c.Raft.LeadershipTransfer().Error(); err != nil {
			return fmt.Errorf("removing %s, the leader: hand leadership over: %w", name, err)
		}
		return ErrHandedOver
	}
	if i >= 0 {
		var sm []state.Member
		for _, x := range next {
			sm = append(sm, toState(x))
		}
		// First the membership, while the node still receives the log:
		// it learns that it was removed.
		if _, _, err := c.Apply(SetMembers{Members: sm, Removed: name, By: by, Reason: reason}, 10*time.Second); err != nil {
			return fmt.Errorf("remove %s from the membership: %w", name, err)
		}
	}
	if suffrage[name] != "" {
		if suffrage[name] == "voter" {
			if err := c.voterChangeWait(ctx); err != nil {
				return err
			}
		}
		if err := c.Raft.RemoveServer(raft.ServerID(name), 0, 10*time.Second).Error(); err != nil {
			return fmt.Errorf("remove %s from raft: %w", name, raftErr(err))
		}
	}
	c.cfg.Logger.Info("node removed from the cluster", "node", name, "by", by)
	return nil
}

// UnknownMemberError: no such node in the membership.
type UnknownMemberError struct {
	Name  string
	Nodes []string
}

func (e UnknownMemberError) Error() string {
	return fmt.Sprintf("no node %q in the cluster (its nodes: %s)", e.Name, strings.Join(e.Nodes, ", "))
}

func raftErr(err error) error {
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
		return ErrNotLeader
	}
	return err
}
