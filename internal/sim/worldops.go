package sim

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/sim/policy"
)

// Region is the simulated region.
func (w *World) Region() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st.Region
}

// AccountID is the simulated account.
func (w *World) AccountID() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st.AccountID
}

// State returns a deep copy of the world's state.
func (w *World) State() State {
	data, err := w.MarshalJSON()
	if err != nil {
		panic("sim: marshal world: " + err.Error())
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		panic("sim: unmarshal world: " + err.Error())
	}
	return st
}

// MarshalJSON encodes the world in the format LoadWorld reads.
func (w *World) MarshalJSON() ([]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return json.Marshal(&w.st)
}

// Instance returns a copy of an instance.
func (w *World) Instance(id string) (Instance, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if in := w.instance(id); in != nil {
		return *in, true
	}
	return Instance{}, false
}

// InstanceByName returns the instance whose Name tag is name (the node).
func (w *World) InstanceByName(name string) (Instance, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, in := range w.st.Instances {
		if in.Name == name {
			return in, true
		}
	}
	return Instance{}, false
}

// NetworkInterface returns a copy of an ENI.
func (w *World) NetworkInterface(id string) (NetworkInterface, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e := w.eni(id); e != nil {
		c := *e
		c.SecondaryPrivateIPs = slices.Clone(e.SecondaryPrivateIPs)
		v := *e.SourceDestCheck
		c.SourceDestCheck = &v
		if e.Attachment != nil {
			a := *e.Attachment
			c.Attachment = &a
		}
		return c, true
	}
	return NetworkInterface{}, false
}

// InstanceNetworkInterfaces returns the ids of the ENIs attached to an
// instance, by device index.
func (w *World) InstanceNetworkInterfaces(instanceID string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ids []string
	for _, e := range w.instanceENIs(instanceID) {
		ids = append(ids, e.ID)
	}
	return ids
}

// RouteTable returns a copy of a route table.
func (w *World) RouteTable(id string) (RouteTable, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if rt := w.routeTable(id); rt != nil {
		c := *rt
		c.Subnets = slices.Clone(rt.Subnets)
		c.Routes = slices.Clone(rt.Routes)
		return c, true
	}
	return RouteTable{}, false
}

// Route returns the route for a destination in a route table.
func (w *World) Route(routeTableID, destinationCidrBlock string) (Route, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if rt := w.routeTable(routeTableID); rt != nil {
		for _, r := range rt.Routes {
			if r.DestinationCidrBlock == destinationCidrBlock {
				return r, true
			}
		}
	}
	return Route{}, false
}

// Address returns a copy of an Elastic IP by allocation id.
func (w *World) Address(allocationID string) (Address, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if a := w.address(allocationID); a != nil {
		return *a, true
	}
	return Address{}, false
}

// AdminCredentials returns the static access key of the admin user (the
// first credential of AdminUser).
func (w *World) AdminCredentials() (accessKeyID, secret string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.st.Credentials {
		if c.User == AdminUser {
			return c.AccessKeyID, c.SecretAccessKey
		}
	}
	return "", ""
}

// IssueRoleCredentials creates temporary credentials for a role, valid for
// ttl from the simulator's clock (ttl <= 0 means 6 hours). The session name
// is the id of the first instance with that role, else "lifeboat". A role
// that does not exist gets credentials that are allowed nothing.
func (w *World) IssueRoleCredentials(role string, ttl time.Duration) (accessKeyID, secret, token string, expires time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	session := "lifeboat"
	for _, in := range w.st.Instances {
		if in.Role == role {
			session = in.ID
			break
		}
	}
	c := w.issue(role, session, ttl)
	return c.AccessKeyID, c.SecretAccessKey, c.SessionToken, c.Expiration
}

// IssueInstanceCredentials creates temporary credentials for the role of an
// instance's profile, with the instance id as session name, as IMDS hands
// them out.
func (w *World) IssueInstanceCredentials(instanceID string, ttl time.Duration) (Credential, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	in := w.instance(instanceID)
	if in == nil {
		return Credential{}, fmt.Errorf("sim: no instance %q", instanceID)
	}
	if in.Role == "" {
		return Credential{}, fmt.Errorf("sim: instance %s has no instance profile", instanceID)
	}
	return w.issue(in.Role, in.ID, ttl), nil
}

func (w *World) issue(role, session string, ttl time.Duration) Credential {
	if ttl <= 0 {
		ttl = 6 * time.Hour
	}
	c := Credential{
		AccessKeyID:     w.newUniqueID("ASIA"),
		SecretAccessKey: randomString(40),
		SessionToken:    "IQoJb3JpZ2luX2VjE" + randomString(180),
		Expiration:      w.clock().Add(ttl).UTC().Truncate(time.Second),
		Role:            role,
		SessionName:     session,
	}
	w.st.Credentials = append(w.st.Credentials, c)
	return c
}

func (w *World) clock() time.Time {
	if w.now == nil {
		return time.Now()
	}
	return w.now()
}

func (w *World) setClock(now func() time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.now = now
}

// randomString returns n characters of base64's alphabet (without "/" and
// "+", so values survive URLs and shells unquoted).
func randomString(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// PutRolePolicy adds or replaces an inline policy of a role.
func (w *World) PutRolePolicy(role, name string, doc []byte) error {
	if _, err := policy.Parse(doc); err != nil {
		return err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, doc); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.role(role)
	if r == nil {
		return fmt.Errorf("sim: no role %q", role)
	}
	if r.Policies == nil {
		r.Policies = map[string]json.RawMessage{}
	}
	r.Policies[name] = compact.Bytes()
	return w.reparse()
}

// DeleteRolePolicy removes an inline policy of a role.
func (w *World) DeleteRolePolicy(role, name string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.role(role)
	if r == nil {
		return fmt.Errorf("sim: no role %q", role)
	}
	if _, ok := r.Policies[name]; !ok {
		return fmt.Errorf("sim: role %s has no policy %q", role, name)
	}
	delete(r.Policies, name)
	return w.reparse()
}

// RolePolicies returns a role's inline policies (name -> JSON).
func (w *World) RolePolicies(role string) map[string][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.role(role)
	if r == nil {
		return nil
	}
	out := map[string][]byte{}
	for k, v := range r.Policies {
		out[k] = slices.Clone(v)
	}
	return out
}

func (w *World) reparse() error {
	docs := map[string][]namedDoc{}
	add := func(key string, pols map[string]json.RawMessage) error {
		for _, name := range sortedKeys(pols) {
			d, err := policy.Parse(pols[name])
			if err != nil {
				return fmt.Errorf("%s policy %s: %w", key, name, err)
			}
			docs[key] = append(docs[key], namedDoc{name, d})
		}
		return nil
	}
	for _, r := range w.st.Roles {
		if err := add("role/"+r.Name, r.Policies); err != nil {
			return err
		}
	}
	for _, u := range w.st.Users {
		if err := add("user/"+u.Name, u.Policies); err != nil {
			return err
		}
	}
	w.docs = docs
	return nil
}

// AddNetworkInterface creates an ENI in the instance's subnet and attaches
// it at the next free device index; it returns the new ENI's id.
func (w *World) AddNetworkInterface(instanceID string) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	in := w.instance(instanceID)
	if in == nil {
		return "", fmt.Errorf("sim: no instance %q", instanceID)
	}
	sn := w.subnet(in.SubnetID)
	prefix, _ := netip.ParsePrefix(sn.CidrBlock)
	ip := ""
	addr := prefix.Addr()
	for i := 0; i < 20; i++ {
		addr = addr.Next()
	}
	for ; prefix.Contains(addr); addr = addr.Next() {
		if !w.ipUsed(addr.String()) {
			ip = addr.String()
			break
		}
	}
	if ip == "" {
		return "", fmt.Errorf("sim: subnet %s is full", sn.ID)
	}
	dev := 0
	for _, e := range w.instanceENIs(instanceID) {
		if e.Attachment.DeviceIndex >= dev {
			dev = e.Attachment.DeviceIndex + 1
		}
	}
	t := true
	e := NetworkInterface{ID: w.newID("eni"), SubnetID: sn.ID, PrivateIP: ip, MAC: w.newMAC(), SourceDestCheck: &t,
		Attachment: &Attachment{ID: w.newID("eni-attach"), InstanceID: instanceID, DeviceIndex: dev}}
	w.st.NetworkInterfaces = append(w.st.NetworkInterfaces, e)
	return e.ID, nil
}

func (w *World) ipUsed(ip string) bool {
	if slices.ContainsFunc(w.st.Instances, func(in Instance) bool { return in.PrivateIP == ip }) {
		return true
	}
	for i := range w.st.NetworkInterfaces {
		if hasIP(&w.st.NetworkInterfaces[i], ip) {
			return true
		}
	}
	return false
}

// Lookups below require w.mu held (or exclusive ownership of w).

func (w *World) instance(id string) *Instance {
	for i := range w.st.Instances {
		if w.st.Instances[i].ID == id {
			return &w.st.Instances[i]
		}
	}
	return nil
}

func (w *World) eni(id string) *NetworkInterface {
	for i := range w.st.NetworkInterfaces {
		if w.st.NetworkInterfaces[i].ID == id {
			return &w.st.NetworkInterfaces[i]
		}
	}
	return nil
}

func (w *World) subnet(id string) *Subnet {
	for i := range w.st.Subnets {
		if w.st.Subnets[i].ID == id {
			return &w.st.Subnets[i]
		}
	}
	return nil
}

func (w *World) routeTable(id string) *RouteTable {
	for i := range w.st.RouteTables {
		if w.st.RouteTables[i].ID == id {
			return &w.st.RouteTables[i]
		}
	}
	return nil
}

func (w *World) address(allocationID string) *Address {
	for i := range w.st.Addresses {
		if w.st.Addresses[i].AllocationID == allocationID {
			return &w.st.Addresses[i]
		}
	}
	return nil
}

func (w *World) role(name string) *Role {
	for i := range w.st.Roles {
		if w.st.Roles[i].Name == name {
			return &w.st.Roles[i]
		}
	}
	return nil
}

func (w *World) user(name string) *User {
	for i := range w.st.Users {
		if w.st.Users[i].Name == name {
			return &w.st.Users[i]
		}
	}
	return nil
}

func (w *World) credential(accessKeyID string) *Credential {
	for i := range w.st.Credentials {
		if w.st.Credentials[i].AccessKeyID == accessKeyID {
			return &w.st.Credentials[i]
		}
	}
	return nil
}

// attachedInstance is the instance an ENI is attached to, or "".
func (w *World) attachedInstance(eniID string) string {
	if e := w.eni(eniID); e != nil && e.Attachment != nil {
		return e.Attachment.InstanceID
	}
	return ""
}

// instanceENIs lists the ENIs attached to an instance by device index.
func (w *World) instanceENIs(instanceID string) []*NetworkInterface {
	var out []*NetworkInterface
	for i := range w.st.NetworkInterfaces {
		e := &w.st.NetworkInterfaces[i]
		if e.Attachment != nil && e.Attachment.InstanceID == instanceID {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *NetworkInterface) int { return a.Attachment.DeviceIndex - b.Attachment.DeviceIndex })
	return out
}

// vpcOfSubnet is the VPC id of a subnet, or "".
func (w *World) vpcOfSubnet(subnetID string) string {
	if s := w.subnet(subnetID); s != nil {
		return s.VpcID
	}
	return ""
}
