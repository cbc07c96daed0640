// Package sim is lifeboat's stand-in for the parts of AWS it uses: EC2, STS,
// IAM role policies and the instance metadata service (IMDSv2), speaking the
// real wire protocols so the AWS SDK for Go v2 and the AWS CLI work against
// it unchanged.
//
// A World is the simulated account: one region, VPCs, subnets, route tables,
// instances, network interfaces, Elastic IPs, IAM roles with inline policies
// and the credentials that act as those roles (or as the admin user). A
// Server answers the EC2, STS and IAM Query APIs over HTTP for a World
// (and, per instance, IMDSv2 through IMDSHandler): it checks
// SigV4 signatures, authorizes every EC2 call against the caller's policies
// (with DryRun and encoded authorization failure messages as AWS does) and
// can inject faults (latency, throttling, 5xx, clock skew, expired
// credentials, an endpoint that ignores DryRun) at run time. Test controls, loopback only: /_sim/faults,
// /_sim/world and /_sim/imds/INSTANCE.
//
// Besides the AWS APIs at "/", a Server's handler has test controls that
// are not AWS and answer loopback callers only (unless
// Options.AllowRemoteControl): "/_sim/faults" (GET the current Faults as
// JSON, PUT new ones), "/_sim/world" (GET the world in the JSON format
// LoadWorld reads) and "/_sim/imds/INSTANCE". Their PUT and POST bodies
// must be sent as application/json, and a request carrying a foreign
// Origin (or Sec-Fetch-Site: cross-site) is refused: a web page cannot
// drive them.
package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/sim/policy"
)

// Defaults of a simulated account.
const (
	DefaultRegion    = "us-east-1"
	DefaultAccountID = "123456789012"
	// AdminUser is the name of the IAM user with full access.
	AdminUser = "admin"
	// AdminAccessKeyID and AdminSecretAccessKey are the admin user's static
	// keys in DefaultWorld (AWS's documented example keys).
	AdminAccessKeyID     = "AKIAIOSFODNN7EXAMPLE"
	AdminSecretAccessKey = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	// PlaceholderPolicyName is the inline policy DefaultWorld gives each
	// node role.
	PlaceholderPolicyName = "lifeboat"
)

// PlaceholderActions are the EC2 actions the simulator implements; each
// DefaultWorld role is allowed all of them on "*".
var PlaceholderActions = []string{
	"ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces", "ec2:DescribeRouteTables",
	"ec2:CreateRoute", "ec2:ReplaceRoute", "ec2:DeleteRoute",
	"ec2:DescribeAddresses", "ec2:AllocateAddress", "ec2:AssociateAddress", "ec2:DisassociateAddress",
	"ec2:DescribeNetworkInterfaceAttribute", "ec2:ModifyNetworkInterfaceAttribute",
}

// State is the JSON form of a World (the file LoadWorld reads and
// /_sim/world serves).
type State struct {
	Region            string             `json:"region"`
	AccountID         string             `json:"accountId"`
	VPCs              []VPC              `json:"vpcs"`
	Subnets           []Subnet           `json:"subnets"`
	RouteTables       []RouteTable       `json:"routeTables"`
	Instances         []Instance         `json:"instances"`
	NetworkInterfaces []NetworkInterface `json:"networkInterfaces"`
	Addresses         []Address          `json:"addresses"`
	Roles             []Role             `json:"roles"`
	Users             []User             `json:"users"`
	Credentials       []Credential       `json:"credentials"`
}

// VPC is a virtual network.
type VPC struct {
	ID        string `json:"id"`
	CidrBlock string `json:"cidrBlock"`
}

// Subnet is a VPC subnet in one availability zone.
type Subnet struct {
	ID               string `json:"id"`
	VpcID            string `json:"vpcId"`
	CidrBlock        string `json:"cidrBlock"`
	AvailabilityZone string `json:"availabilityZone"`
}

// RouteTable is a VPC route table.
type RouteTable struct {
	ID    string `json:"id"`
	VpcID string `json:"vpcId"`
	// Main marks the VPC's main route table.
	Main bool `json:"main,omitempty"`
	// Subnets explicitly associated with the table.
	Subnets []string `json:"subnets,omitempty"`
	Routes  []Route  `json:"routes"`
}

// Route is one route of a route table. Exactly one target is set.
type Route struct {
	DestinationCidrBlock string `json:"destinationCidrBlock"`
	NetworkInterfaceID   string `json:"networkInterfaceId,omitempty"`
	// InstanceID is the instance the target interface is attached to (set
	// by the simulator; a file may give it instead of the interface).
	InstanceID string `json:"instanceId,omitempty"`
	// GatewayID is "local" or an internet gateway id.
	GatewayID string `json:"gatewayId,omitempty"`
	State     string `json:"state,omitempty"`  // "active" (default)
	Origin    string `json:"origin,omitempty"` // "CreateRouteTable" or "CreateRoute" (default)
}

// Instance is an EC2 instance (always running).
type Instance struct {
	ID               string    `json:"id"`
	Name             string    `json:"name,omitempty"` // the Name tag: the lifeboat node
	SubnetID         string    `json:"subnetId"`
	PrivateIP        string    `json:"privateIp"`
	AvailabilityZone string    `json:"availabilityZone,omitempty"` // default: the subnet's
	Role             string    `json:"role,omitempty"`             // IAM role of its instance profile
	LaunchTime       time.Time `json:"launchTime,omitzero"`
}

// NetworkInterface is an ENI.
type NetworkInterface struct {
	ID                  string   `json:"id"`
	SubnetID            string   `json:"subnetId"`
	PrivateIP           string   `json:"privateIp"`
	SecondaryPrivateIPs []string `json:"secondaryPrivateIps,omitempty"`
	MAC                 string   `json:"mac"`
	Description         string   `json:"description,omitempty"`
	// SourceDestCheck defaults to true when absent.
	SourceDestCheck *bool       `json:"sourceDestCheck,omitempty"`
	Attachment      *Attachment `json:"attachment,omitempty"`
}

// Attachment ties an ENI to an instance.
type Attachment struct {
	ID          string `json:"id,omitempty"`
	InstanceID  string `json:"instanceId"`
	DeviceIndex int    `json:"deviceIndex"`
}

// Address is an Elastic IP. The association fields are empty when it is
// not associated.
type Address struct {
	AllocationID       string `json:"allocationId"`
	PublicIP           string `json:"publicIp"`
	AssociationID      string `json:"associationId,omitempty"`
	NetworkInterfaceID string `json:"networkInterfaceId,omitempty"`
	PrivateIPAddress   string `json:"privateIpAddress,omitempty"`
	InstanceID         string `json:"instanceId,omitempty"`
}

// Role is an IAM role with inline policies (name -> JSON document; a file
// may give a document as a JSON object or as a string).
type Role struct {
	Name     string                     `json:"name"`
	ID       string                     `json:"id,omitempty"`
	Policies map[string]json.RawMessage `json:"policies,omitempty"`
}

// User is an IAM user with inline policies.
type User struct {
	Name     string                     `json:"name"`
	ID       string                     `json:"id,omitempty"`
	Policies map[string]json.RawMessage `json:"policies,omitempty"`
}

// Credential is an access key. Exactly one of Role and User is set; role
// credentials are temporary (they carry a session token and usually expire).
type Credential struct {
	AccessKeyID     string    `json:"accessKeyId"`
	SecretAccessKey string    `json:"secretAccessKey"`
	SessionToken    string    `json:"sessionToken,omitempty"`
	Expiration      time.Time `json:"expiration,omitzero"`
	Role            string    `json:"role,omitempty"`
	User            string    `json:"user,omitempty"`
	// SessionName of an assumed role (the instance id for instance roles).
	SessionName string `json:"sessionName,omitempty"`
}

// World is a simulated AWS account. It is safe for concurrent use: one
// mutex guards it and every read or change goes through its methods.
type World struct {
	mu   sync.Mutex
	st   State
	docs map[string][]namedDoc // "role/NAME" or "user/NAME" -> parsed inline policies
	next map[string]int        // id prefix -> next counter
	now  func() time.Time
}

// namedDoc is a parsed inline policy and its name.
type namedDoc struct {
	name string
	doc  *policy.Document
}

// DefaultWorld builds an account for the given lifeboat nodes: one VPC
// 10.0.0.0/16; per node (numbered n from 1) a subnet 10.0.n.0/24, an
// instance i-0000000000000000n with private IP 10.0.n.10 and role
// "lifeboat-NODE" and its ENI eni-0000000000000000n; one route table with
// the local route; one allocated, unassociated Elastic IP; the admin user
// with AdminAccessKeyID/AdminSecretAccessKey and full access. Each role has
// the placeholder inline policy allowing PlaceholderActions on "*".
func DefaultWorld(nodes []string) *World {
	w := &World{now: time.Now}
	w.st = State{Region: DefaultRegion, AccountID: DefaultAccountID}
	w.reindex()
	vpc := w.newID("vpc")
	w.st.VPCs = append(w.st.VPCs, VPC{ID: vpc, CidrBlock: "10.0.0.0/16"})
	w.st.RouteTables = append(w.st.RouteTables, RouteTable{ID: w.newID("rtb"), VpcID: vpc, Main: true,
		Routes: []Route{{DestinationCidrBlock: "10.0.0.0/16", GatewayID: "local", State: "active", Origin: "CreateRouteTable"}}})
	placeholder := []byte(policy.AllowStatement(PlaceholderActions, nil))
	placeholder = []byte(`{"Version":"2012-10-17","Statement":[` + string(placeholder) + `]}`)
	launch := time.Now().UTC().Truncate(time.Second)
	for i, node := range nodes {
		n := i + 1
		subnet := w.newID("subnet")
		az := DefaultRegion + string(rune('a'+i%3))
		w.st.Subnets = append(w.st.Subnets, Subnet{ID: subnet, VpcID: vpc, CidrBlock: fmt.Sprintf("10.0.%d.0/24", n%256), AvailabilityZone: az})
		role := "lifeboat-" + node
		if !slices.ContainsFunc(w.st.Roles, func(r Role) bool { return r.Name == role }) {
			w.st.Roles = append(w.st.Roles, Role{Name: role, ID: w.newUniqueID("AROA"),
				Policies: map[string]json.RawMessage{PlaceholderPolicyName: placeholder}})
		}
		ip := fmt.Sprintf("10.0.%d.10", n%256)
		inst := w.newID("i")
		w.st.Instances = append(w.st.Instances, Instance{ID: inst, Name: node, SubnetID: subnet, PrivateIP: ip,
			AvailabilityZone: az, Role: role, LaunchTime: launch})
		w.st.NetworkInterfaces = append(w.st.NetworkInterfaces, NetworkInterface{ID: w.newID("eni"), SubnetID: subnet,
			PrivateIP: ip, MAC: w.newMAC(), Description: "Primary network interface",
			Attachment: &Attachment{ID: w.newID("eni-attach"), InstanceID: inst, DeviceIndex: 0}})
	}
	w.st.Addresses = append(w.st.Addresses, Address{AllocationID: w.newID("eipalloc"), PublicIP: w.freePublicIP()})
	w.st.Users = append(w.st.Users, User{Name: AdminUser, ID: w.newUniqueID("AIDA"), Policies: map[string]json.RawMessage{
		"AdministratorAccess": json.RawMessage(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`)}})
	w.st.Credentials = append(w.st.Credentials, Credential{AccessKeyID: AdminAccessKeyID, SecretAccessKey: AdminSecretAccessKey, User: AdminUser})
	if err := w.validate(); err != nil {
		panic("sim: DefaultWorld: " + err.Error()) // a bug, not bad input
	}
	return w
}

// LoadWorld reads a World from a JSON file (the State format). Unknown
// fields are rejected; errors name the file and the field.
func LoadWorld(path string) (*World, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	w, err := ParseWorld(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return w, nil
}

// ParseWorld builds a World from its JSON form.
func ParseWorld(data []byte) (*World, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var st State
	if err := dec.Decode(&st); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after the world object")
	}
	w := &World{st: st, now: time.Now}
	if w.st.Region == "" {
		w.st.Region = DefaultRegion
	}
	if w.st.AccountID == "" {
		w.st.AccountID = DefaultAccountID
	}
	w.reindex()
	if err := w.validate(); err != nil {
		return nil, err
	}
	return w, nil
}

// validate checks references and fills defaults. It also parses every
// policy into w.docs.
func (w *World) validate() error {
	st := &w.st
	if len(st.AccountID) != 12 || strings.Trim(st.AccountID, "0123456789") != "" {
		return fmt.Errorf("accountId: %q is not 12 digits", st.AccountID)
	}
	seen := map[string]string{}
	id := func(field, v, prefix string) error {
		if !strings.HasPrefix(v, prefix+"-") || len(v) <= len(prefix)+1 {
			return fmt.Errorf("%s: %q does not start with %q", field, v, prefix+"-")
		}
		if f, dup := seen[v]; dup {
			return fmt.Errorf("%s: %q already used by %s", field, v, f)
		}
		seen[v] = field
		return nil
	}
	cidr := func(field, v string) error {
		p, err := netip.ParsePrefix(v)
		if err != nil || !p.Addr().Is4() || p.Masked() != p {
			return fmt.Errorf("%s: %q is not an IPv4 CIDR block", field, v)
		}
		return nil
	}
	ipv4 := func(field, v string) error {
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			return fmt.Errorf("%s: %q is not an IPv4 address", field, v)
		}
		return nil
	}
	vpcs, subnets, insts, enis := map[string]bool{}, map[string]Subnet{}, map[string]bool{}, map[string]bool{}
	for i, v := range st.VPCs {
		f := fmt.Sprintf("vpcs[%d]", i)
		if err := id(f+".id", v.ID, "vpc"); err != nil {
			return err
		}
		if err := cidr(f+".cidrBlock", v.CidrBlock); err != nil {
			return err
		}
		vpcs[v.ID] = true
	}
	for i, s := range st.Subnets {
		f := fmt.Sprintf("subnets[%d]", i)
		if err := id(f+".id", s.ID, "subnet"); err != nil {
			return err
		}
		if !vpcs[s.VpcID] {
			return fmt.Errorf("%s.vpcId: unknown VPC %q", f, s.VpcID)
		}
		if err := cidr(f+".cidrBlock", s.CidrBlock); err != nil {
			return err
		}
		if s.AvailabilityZone == "" {
			st.Subnets[i].AvailabilityZone = st.Region + "a"
		}
		subnets[s.ID] = st.Subnets[i]
	}
	roles := map[string]bool{}
	w.docs = map[string][]namedDoc{}
	parsePolicies := func(f, key string, pols map[string]json.RawMessage) error {
		names := sortedKeys(pols)
		for _, name := range names {
			raw := pols[name]
			if len(raw) > 0 && raw[0] == '"' {
				var s string
				if err := json.Unmarshal(raw, &s); err != nil {
					return fmt.Errorf("%s.policies.%s: %w", f, name, err)
				}
				raw = json.RawMessage(s)
			}
			doc, err := policy.Parse(raw)
			if err != nil {
				return fmt.Errorf("%s.policies.%s: %w", f, name, err)
			}
			var compact bytes.Buffer
			if json.Compact(&compact, raw) == nil {
				raw = compact.Bytes()
			}
			pols[name] = raw
			w.docs[key] = append(w.docs[key], namedDoc{name, doc})
		}
		return nil
	}
	for i := range st.Roles {
		r := &st.Roles[i]
		f := fmt.Sprintf("roles[%d]", i)
		if r.Name == "" || roles[r.Name] {
			return fmt.Errorf("%s.name: %q is empty or used twice", f, r.Name)
		}
		roles[r.Name] = true
		if r.ID == "" {
			r.ID = w.newUniqueID("AROA")
		}
		if err := parsePolicies(f, "role/"+r.Name, r.Policies); err != nil {
			return err
		}
	}
	users := map[string]bool{}
	for i := range st.Users {
		u := &st.Users[i]
		f := fmt.Sprintf("users[%d]", i)
		if u.Name == "" || users[u.Name] {
			return fmt.Errorf("%s.name: %q is empty or used twice", f, u.Name)
		}
		users[u.Name] = true
		if u.ID == "" {
			u.ID = w.newUniqueID("AIDA")
		}
		if err := parsePolicies(f, "user/"+u.Name, u.Policies); err != nil {
			return err
		}
	}
	for i := range st.Instances {
		in := &st.Instances[i]
		f := fmt.Sprintf("instances[%d]", i)
		if err := id(f+".id", in.ID, "i"); err != nil {
			return err
		}
		sn, ok := subnets[in.SubnetID]
		if !ok {
			return fmt.Errorf("%s.subnetId: unknown subnet %q", f, in.SubnetID)
		}
		if err := ipv4(f+".privateIp", in.PrivateIP); err != nil {
			return err
		}
		if in.Role != "" && !roles[in.Role] {
			return fmt.Errorf("%s.role: unknown role %q", f, in.Role)
		}
		if in.AvailabilityZone == "" {
			in.AvailabilityZone = sn.AvailabilityZone
		}
		insts[in.ID] = true
	}
	devices := map[string]bool{}
	for i := range st.NetworkInterfaces {
		e := &st.NetworkInterfaces[i]
		f := fmt.Sprintf("networkInterfaces[%d]", i)
		if err := id(f+".id", e.ID, "eni"); err != nil {
			return err
		}
		if _, ok := subnets[e.SubnetID]; !ok {
			return fmt.Errorf("%s.subnetId: unknown subnet %q", f, e.SubnetID)
		}
		if err := ipv4(f+".privateIp", e.PrivateIP); err != nil {
			return err
		}
		for j, ip := range e.SecondaryPrivateIPs {
			if err := ipv4(fmt.Sprintf("%s.secondaryPrivateIps[%d]", f, j), ip); err != nil {
				return err
			}
		}
		if e.MAC == "" {
			e.MAC = w.newMAC()
		}
		if e.SourceDestCheck == nil {
			t := true
			e.SourceDestCheck = &t
		}
		if a := e.Attachment; a != nil {
			if !insts[a.InstanceID] {
				return fmt.Errorf("%s.attachment.instanceId: unknown instance %q", f, a.InstanceID)
			}
			key := fmt.Sprintf("%s/%d", a.InstanceID, a.DeviceIndex)
			if devices[key] {
				return fmt.Errorf("%s.attachment.deviceIndex: %d already used on %s", f, a.DeviceIndex, a.InstanceID)
			}
			devices[key] = true
			if a.ID == "" {
				a.ID = w.newID("eni-attach")
			}
		}
		enis[e.ID] = true
	}
	for i := range st.RouteTables {
		rt := &st.RouteTables[i]
		f := fmt.Sprintf("routeTables[%d]", i)
		if err := id(f+".id", rt.ID, "rtb"); err != nil {
			return err
		}
		if !vpcs[rt.VpcID] {
			return fmt.Errorf("%s.vpcId: unknown VPC %q", f, rt.VpcID)
		}
		for j, s := range rt.Subnets {
			if _, ok := subnets[s]; !ok {
				return fmt.Errorf("%s.subnets[%d]: unknown subnet %q", f, j, s)
			}
		}
		dests := map[string]bool{}
		for j := range rt.Routes {
			r := &rt.Routes[j]
			rf := fmt.Sprintf("%s.routes[%d]", f, j)
			if err := cidr(rf+".destinationCidrBlock", r.DestinationCidrBlock); err != nil {
				return err
			}
			if dests[r.DestinationCidrBlock] {
				return fmt.Errorf("%s.destinationCidrBlock: %s appears twice", rf, r.DestinationCidrBlock)
			}
			dests[r.DestinationCidrBlock] = true
			switch {
			case r.GatewayID != "" && (r.NetworkInterfaceID != "" || r.InstanceID != ""):
				return fmt.Errorf("%s: gatewayId and an interface or instance target are exclusive", rf)
			case r.GatewayID != "":
				if r.GatewayID != "local" && !strings.HasPrefix(r.GatewayID, "igw-") {
					return fmt.Errorf("%s.gatewayId: %q is neither \"local\" nor an igw-", rf, r.GatewayID)
				}
			case r.NetworkInterfaceID != "":
				if !enis[r.NetworkInterfaceID] {
					return fmt.Errorf("%s.networkInterfaceId: unknown interface %q", rf, r.NetworkInterfaceID)
				}
				r.InstanceID = w.attachedInstance(r.NetworkInterfaceID)
			case r.InstanceID != "":
				list := w.instanceENIs(r.InstanceID)
				if len(list) != 1 {
					return fmt.Errorf("%s.instanceId: instance %q has %d interfaces; give networkInterfaceId", rf, r.InstanceID, len(list))
				}
				r.NetworkInterfaceID = list[0].ID
			default:
				return fmt.Errorf("%s: no target (networkInterfaceId, instanceId or gatewayId)", rf)
			}
			if r.State == "" {
				r.State = "active"
			}
			if r.Origin == "" {
				r.Origin = "CreateRoute"
			}
		}
	}
	publics := map[string]bool{}
	for i := range st.Addresses {
		a := &st.Addresses[i]
		f := fmt.Sprintf("addresses[%d]", i)
		if err := id(f+".allocationId", a.AllocationID, "eipalloc"); err != nil {
			return err
		}
		if err := ipv4(f+".publicIp", a.PublicIP); err != nil {
			return err
		}
		if publics[a.PublicIP] {
			return fmt.Errorf("%s.publicIp: %s used twice", f, a.PublicIP)
		}
		publics[a.PublicIP] = true
		if a.NetworkInterfaceID == "" {
			if a.AssociationID != "" || a.InstanceID != "" || a.PrivateIPAddress != "" {
				return fmt.Errorf("%s.networkInterfaceId: required when the address is associated", f)
			}
			continue
		}
		e := w.eni(a.NetworkInterfaceID)
		if e == nil {
			return fmt.Errorf("%s.networkInterfaceId: unknown interface %q", f, a.NetworkInterfaceID)
		}
		if a.PrivateIPAddress == "" {
			a.PrivateIPAddress = e.PrivateIP
		} else if !hasIP(e, a.PrivateIPAddress) {
			return fmt.Errorf("%s.privateIpAddress: %s is not an address of %s", f, a.PrivateIPAddress, e.ID)
		}
		if a.AssociationID == "" {
			a.AssociationID = w.newID("eipassoc")
		} else if err := id(f+".associationId", a.AssociationID, "eipassoc"); err != nil {
			return err
		}
		a.InstanceID = w.attachedInstance(e.ID)
	}
	keys := map[string]bool{}
	for i := range st.Credentials {
		c := &st.Credentials[i]
		f := fmt.Sprintf("credentials[%d]", i)
		if c.AccessKeyID == "" || keys[c.AccessKeyID] {
			return fmt.Errorf("%s.accessKeyId: %q is empty or used twice", f, c.AccessKeyID)
		}
		keys[c.AccessKeyID] = true
		if c.SecretAccessKey == "" {
			return fmt.Errorf("%s.secretAccessKey: empty", f)
		}
		switch {
		case (c.Role == "") == (c.User == ""):
			return fmt.Errorf("%s: exactly one of role and user must be set", f)
		case c.Role != "" && !roles[c.Role]:
			return fmt.Errorf("%s.role: unknown role %q", f, c.Role)
		case c.User != "" && !users[c.User]:
			return fmt.Errorf("%s.user: unknown user %q", f, c.User)
		}
		if c.Role != "" && c.SessionName == "" {
			c.SessionName = "lifeboat"
		}
	}
	return nil
}

// reindex resets the id counters (newID skips ids already in use).
func (w *World) reindex() {
	w.next = map[string]int{}
}

// newID returns the next unused deterministic id with the prefix, e.g.
// "i-00000000000000001". Callers hold w.mu (or own w exclusively).
func (w *World) newID(prefix string) string {
	for {
		w.next[prefix]++
		id := fmt.Sprintf("%s-%017x", prefix, w.next[prefix])
		if !w.idUsed(id) {
			return id
		}
	}
}

// peekID returns the id the next newID(prefix) will return.
func (w *World) peekID(prefix string) string {
	saved := w.next[prefix]
	id := w.newID(prefix)
	w.next[prefix] = saved
	return id
}

// newUniqueID returns IAM-style unique ids such as AROA00000000000000001.
func (w *World) newUniqueID(prefix string) string {
	for {
		w.next[prefix]++
		id := fmt.Sprintf("%s%017X", prefix, w.next[prefix])
		if !w.idUsed(id) {
			return id
		}
	}
}

func (w *World) newMAC() string {
	w.next["mac"]++
	n := w.next["mac"]
	return fmt.Sprintf("0a:%02x:%02x:%02x:%02x:%02x", byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

func (w *World) idUsed(id string) bool {
	st := &w.st
	return slices.ContainsFunc(st.VPCs, func(v VPC) bool { return v.ID == id }) ||
		slices.ContainsFunc(st.Subnets, func(v Subnet) bool { return v.ID == id }) ||
		slices.ContainsFunc(st.RouteTables, func(v RouteTable) bool { return v.ID == id }) ||
		slices.ContainsFunc(st.Instances, func(v Instance) bool { return v.ID == id }) ||
		slices.ContainsFunc(st.NetworkInterfaces, func(v NetworkInterface) bool {
			return v.ID == id || v.Attachment != nil && v.Attachment.ID == id
		}) ||
		slices.ContainsFunc(st.Addresses, func(v Address) bool { return v.AllocationID == id || v.AssociationID == id }) ||
		slices.ContainsFunc(st.Roles, func(v Role) bool { return v.ID == id }) ||
		slices.ContainsFunc(st.Users, func(v User) bool { return v.ID == id }) ||
		slices.ContainsFunc(st.Credentials, func(v Credential) bool { return v.AccessKeyID == id })
}

// freePublicIP returns the first unused address of 198.51.100.0/24
// (TEST-NET-2), or "" when all are taken.
func (w *World) freePublicIP() string {
	for n := 1; n < 255; n++ {
		ip := fmt.Sprintf("198.51.100.%d", n)
		if !slices.ContainsFunc(w.st.Addresses, func(a Address) bool { return a.PublicIP == ip }) {
			return ip
		}
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func hasIP(e *NetworkInterface, ip string) bool {
	return e.PrivateIP == ip || slices.Contains(e.SecondaryPrivateIPs, ip)
}
