package sim

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// ec2Actions are the EC2 Query API actions the simulator answers. Each runs
// with the world's mutex held: it validates the request, authorizes it with
// r.authorize (which also answers DryRun), then changes the world.
var ec2Actions map[string]func(*request) (any, *APIError)

func init() {
	ec2Actions = map[string]func(*request) (any, *APIError){
		"DescribeInstances":                 ec2DescribeInstances,
		"DescribeNetworkInterfaces":         ec2DescribeNetworkInterfaces,
		"DescribeRouteTables":               ec2DescribeRouteTables,
		"CreateRoute":                       ec2CreateRoute,
		"ReplaceRoute":                      ec2ReplaceRoute,
		"DeleteRoute":                       ec2DeleteRoute,
		"DescribeAddresses":                 ec2DescribeAddresses,
		"AllocateAddress":                   ec2AllocateAddress,
		"AssociateAddress":                  ec2AssociateAddress,
		"DisassociateAddress":               ec2DisassociateAddress,
		"DescribeNetworkInterfaceAttribute": ec2DescribeNetworkInterfaceAttribute,
		"ModifyNetworkInterfaceAttribute":   ec2ModifyNetworkInterfaceAttribute,
	}
}

// Parameter helpers.

func (r *request) required(name string) (string, *APIError) {
	v := r.params.Get(name)
	if v == "" {
		return "", errorf(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter %s", name)
	}
	return v, nil
}

func (r *request) boolParam(name string) (bool, *APIError) {
	switch v := r.params.Get(name); strings.ToLower(v) {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, errorf(http.StatusBadRequest, "InvalidParameterValue", "Value (%s) for parameter %s is invalid. Expected: 'true' or 'false'.", v, name)
	}
}

// list returns the values of "Name.1", "Name.2", … in index order.
func (r *request) list(name string) ([]string, *APIError) {
	type kv struct {
		n int
		v string
	}
	var got []kv
	for k, vs := range r.params {
		rest, ok := strings.CutPrefix(k, name+".")
		if !ok || strings.Contains(rest, ".") {
			continue
		}
		n, err := strconv.Atoi(rest)
		if err != nil || n < 1 {
			return nil, errorf(http.StatusBadRequest, "InvalidParameterValue", "The parameter %s is not a valid list index.", k)
		}
		got = append(got, kv{n, vs[0]})
	}
	sort.Slice(got, func(i, j int) bool { return got[i].n < got[j].n })
	out := make([]string, len(got))
	for i, g := range got {
		out[i] = g.v
	}
	return out, nil
}

type filter struct {
	name   string
	values []string
}

// filters parses Filter.N.Name / Filter.N.Value.M, accepting the names in
// known and "tag:KEY".
func (r *request) filters(known ...string) ([]filter, *APIError) {
	byIndex := map[int]*filter{}
	for k, vs := range r.params {
		rest, ok := strings.CutPrefix(k, "Filter.")
		if !ok {
			continue
		}
		idx, field, _ := strings.Cut(rest, ".")
		n, err := strconv.Atoi(idx)
		if err != nil || n < 1 {
			return nil, errorf(http.StatusBadRequest, "InvalidParameterValue", "The parameter %s is not a valid filter parameter.", k)
		}
		f := byIndex[n]
		if f == nil {
			f = &filter{}
			byIndex[n] = f
		}
		switch {
		case field == "Name":
			f.name = vs[0]
		case strings.HasPrefix(field, "Value."):
			f.values = append(f.values, vs[0])
		default:
			return nil, errorf(http.StatusBadRequest, "InvalidParameterValue", "The parameter %s is not a valid filter parameter.", k)
		}
	}
	var out []filter
	for _, n := range sortedInts(byIndex) {
		f := byIndex[n]
		if !slices.Contains(known, f.name) && !strings.HasPrefix(f.name, "tag:") {
			return nil, errorf(http.StatusBadRequest, "InvalidParameterValue", "The filter '%s' is invalid", f.name)
		}
		out = append(out, *f)
	}
	return out, nil
}

func sortedInts[V any](m map[int]V) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// matches applies filters to one object; attr returns the object's values
// for a filter name.
func matches(fs []filter, attr func(name string) []string) bool {
	for _, f := range fs {
		ok := false
		for _, have := range attr(f.name) {
			for _, want := range f.values {
				if glob(want, have) {
					ok = true
				}
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// glob matches EC2 filter wildcards: * any run, ? any one character.
func glob(pattern, s string) bool {
	p, t := []rune(pattern), []rune(s)
	pi, ti, star, mark := 0, 0, -1, 0
	for ti < len(t) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == t[ti]):
			pi++
			ti++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ti
			pi++
		case star >= 0:
			pi, mark = star+1, mark+1
			ti = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

func (r *request) arn(kind, id string) string {
	return fmt.Sprintf("arn:aws:ec2:%s:%s:%s/%s", r.w.st.Region, r.w.st.AccountID, kind, id)
}

// ID lookups that answer EC2's error codes.

func malformed(code, id string) *APIError {
	return errorf(http.StatusBadRequest, code+".Malformed", "Invalid id: %q", id)
}

func (r *request) routeTable(id string) (*RouteTable, *APIError) {
	if !strings.HasPrefix(id, "rtb-") {
		return nil, malformed("InvalidRouteTableID", id)
	}
	if rt := r.w.routeTable(id); rt != nil {
		return rt, nil
	}
	return nil, errorf(http.StatusBadRequest, "InvalidRouteTableID.NotFound", "The routeTable ID '%s' does not exist", id)
}

func (r *request) eni(id string) (*NetworkInterface, *APIError) {
	if !strings.HasPrefix(id, "eni-") {
		return nil, malformed("InvalidNetworkInterfaceID", id)
	}
	if e := r.w.eni(id); e != nil {
		return e, nil
	}
	return nil, errorf(http.StatusBadRequest, "InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
}

func (r *request) instance(id string) (*Instance, *APIError) {
	if !strings.HasPrefix(id, "i-") {
		return nil, malformed("InvalidInstanceID", id)
	}
	if in := r.w.instance(id); in != nil {
		return in, nil
	}
	return nil, errorf(http.StatusBadRequest, "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
}

func (r *request) allocation(id string) (*Address, *APIError) {
	if !strings.HasPrefix(id, "eipalloc-") {
		return nil, malformed("InvalidAllocationID", id)
	}
	if a := r.w.address(id); a != nil {
		return a, nil
	}
	return nil, errorf(http.StatusBadRequest, "InvalidAllocationID.NotFound", "The allocation ID '%s' does not exist", id)
}

func (r *request) publicIP(ip string) (*Address, *APIError) {
	for i := range r.w.st.Addresses {
		if a := &r.w.st.Addresses[i]; a.PublicIP == ip {
			return a, nil
		}
	}
	return nil, errorf(http.StatusBadRequest, "InvalidAddress.NotFound", "Address '%s' not found.", ip)
}

// onlyENI is the single ENI of an instance; instances with several must be
// addressed by interface, as on AWS.
func (r *request) onlyENI(in *Instance) (*NetworkInterface, *APIError) {
	list := r.w.instanceENIs(in.ID)
	switch len(list) {
	case 0:
		return nil, errorf(http.StatusBadRequest, "InvalidInstanceID", "There are no interfaces attached to instance '%s'.", in.ID)
	case 1:
		return list[0], nil
	}
	return nil, errorf(http.StatusBadRequest, "InvalidInstanceID", "There are multiple interfaces attached to instance '%s'. Please specify an interface ID for the operation instead.", in.ID)
}

// Describe actions.

func ec2DescribeInstances(r *request) (any, *APIError) {
	ids, e := r.list("InstanceId")
	if e != nil {
		return nil, e
	}
	fs, e := r.filters("instance-id", "private-ip-address", "private-dns-name", "availability-zone", "instance-state-name",
		"instance-state-code", "subnet-id", "vpc-id", "iam-instance-profile.arn", "network-interface.network-interface-id",
		"network-interface.addresses.private-ip-address", "ip-address", "tag-key", "tag-value")
	if e != nil {
		return nil, e
	}
	for _, id := range ids {
		if _, e := r.instance(id); e != nil {
			return nil, e
		}
	}
	if e := r.authorize(); e != nil {
		return nil, e
	}
	out := &describeInstancesResponse{}
	for i := range r.w.st.Instances {
		in := &r.w.st.Instances[i]
		if len(ids) > 0 && !slices.Contains(ids, in.ID) {
			continue
		}
		x := r.w.xmlInstance(in)
		ok := matches(fs, func(name string) []string {
			switch name {
			case "instance-id":
				return []string{in.ID}
			case "private-ip-address":
				return []string{in.PrivateIP}
			case "private-dns-name":
				return []string{x.PrivateDNSName}
			case "availability-zone":
				return []string{in.AvailabilityZone}
			case "instance-state-name":
				return []string{"running"}
			case "instance-state-code":
				return []string{"16"}
			case "subnet-id":
				return []string{in.SubnetID}
			case "vpc-id":
				return []string{x.VpcID}
			case "ip-address":
				return []string{x.IPAddress}
			case "iam-instance-profile.arn":
				if x.IamInstanceProfile != nil {
					return []string{x.IamInstanceProfile.Arn}
				}
			case "network-interface.network-interface-id", "network-interface.addresses.private-ip-address":
				var vs []string
				for _, n := range x.NetworkInterfaces.Items {
					if name == "network-interface.network-interface-id" {
						vs = append(vs, n.NetworkInterfaceID)
					} else {
						for _, p := range n.PrivateIPs.Items {
							vs = append(vs, p.PrivateIPAddress)
						}
					}
				}
				return vs
			}
			return tagValues(x.Tags.Items, name)
		})
		if !ok {
			continue
		}
		res := xmlReservation{ReservationID: "r-" + strings.TrimPrefix(in.ID, "i-"), OwnerID: r.w.st.AccountID}
		res.Instances.Items = []xmlInstance{x}
		out.Reservations.Items = append(out.Reservations.Items, res)
	}
	return out, nil
}

// tagValues answers the tag filters: "tag:KEY", "tag-key", "tag-value".
func tagValues(tags []xmlTag, name string) []string {
	var vs []string
	for _, t := range tags {
		switch {
		case name == "tag-key":
			vs = append(vs, t.Key)
		case name == "tag-value":
			vs = append(vs, t.Value)
		case name == "tag:"+t.Key:
			vs = append(vs, t.Value)
		}
	}
	return vs
}

func ec2DescribeNetworkInterfaces(r *request) (any, *APIError) {
	ids, e := r.list("NetworkInterfaceId")
	if e != nil {
		return nil, e
	}
	fs, e := r.filters("network-interface-id", "attachment.instance-id", "attachment.attachment-id", "attachment.device-index",
		"attachment.status", "subnet-id", "vpc-id", "availability-zone", "private-ip-address", "addresses.private-ip-address",
		"mac-address", "status", "description", "source-dest-check", "association.public-ip", "association.allocation-id",
		"association.association-id", "tag-key", "tag-value")
	if e != nil {
		return nil, e
	}
	for _, id := range ids {
		if _, e := r.eni(id); e != nil {
			return nil, e
		}
	}
	if e := r.authorize(); e != nil {
		return nil, e
	}
	out := &describeNetworkInterfacesResponse{}
	for i := range r.w.st.NetworkInterfaces {
		n := &r.w.st.NetworkInterfaces[i]
		if len(ids) > 0 && !slices.Contains(ids, n.ID) {
			continue
		}
		x := r.w.xmlENI(n, false)
		ok := matches(fs, func(name string) []string {
			att := x.Attachment
			if att == nil {
				att = &xmlAttachment{}
			}
			switch name {
			case "network-interface-id":
				return []string{n.ID}
			case "attachment.instance-id":
				return []string{att.InstanceID}
			case "attachment.attachment-id":
				return []string{att.AttachmentID}
			case "attachment.device-index":
				if x.Attachment != nil {
					return []string{strconv.Itoa(att.DeviceIndex)}
				}
			case "attachment.status":
				return []string{att.Status}
			case "subnet-id":
				return []string{n.SubnetID}
			case "vpc-id":
				return []string{x.VpcID}
			case "availability-zone":
				return []string{x.AvailabilityZone}
			case "private-ip-address":
				return []string{n.PrivateIP}
			case "addresses.private-ip-address":
				return append([]string{n.PrivateIP}, n.SecondaryPrivateIPs...)
			case "mac-address":
				return []string{n.MAC}
			case "status":
				return []string{x.Status}
			case "description":
				return []string{n.Description}
			case "source-dest-check":
				return []string{strconv.FormatBool(*n.SourceDestCheck)}
			case "association.public-ip", "association.allocation-id", "association.association-id":
				var vs []string
				for _, a := range r.w.st.Addresses {
					if a.NetworkInterfaceID == n.ID {
						vs = append(vs, map[string]string{"association.public-ip": a.PublicIP,
							"association.allocation-id": a.AllocationID, "association.association-id": a.AssociationID}[name])
					}
				}
				return vs
			}
			return nil // no tags on interfaces
		})
		if ok {
			out.NetworkInterfaces.Items = append(out.NetworkInterfaces.Items, x)
		}
	}
	return out, nil
}

func ec2DescribeRouteTables(r *request) (any, *APIError) {
	ids, e := r.list("RouteTableId")
	if e != nil {
		return nil, e
	}
	fs, e := r.filters("route-table-id", "vpc-id", "owner-id", "route.destination-cidr-block", "route.instance-id",
		"route.network-interface-id", "route.gateway-id", "route.state", "route.origin", "association.subnet-id",
		"association.main", "association.route-table-association-id", "tag-key", "tag-value")
	if e != nil {
		return nil, e
	}
	for _, id := range ids {
		if _, e := r.routeTable(id); e != nil {
			return nil, e
		}
	}
	if e := r.authorize(); e != nil {
		return nil, e
	}
	out := &describeRouteTablesResponse{}
	for i := range r.w.st.RouteTables {
		rt := &r.w.st.RouteTables[i]
		if len(ids) > 0 && !slices.Contains(ids, rt.ID) {
			continue
		}
		x := r.w.xmlRouteTable(rt)
		ok := matches(fs, func(name string) []string {
			var vs []string
			switch name {
			case "route-table-id":
				return []string{rt.ID}
			case "vpc-id":
				return []string{rt.VpcID}
			case "owner-id":
				return []string{r.w.st.AccountID}
			}
			for _, ro := range x.Routes.Items {
				switch name {
				case "route.destination-cidr-block":
					vs = append(vs, ro.DestinationCidrBlock)
				case "route.instance-id":
					vs = append(vs, ro.InstanceID)
				case "route.network-interface-id":
					vs = append(vs, ro.NetworkInterfaceID)
				case "route.gateway-id":
					vs = append(vs, ro.GatewayID)
				case "route.state":
					vs = append(vs, ro.State)
				case "route.origin":
					vs = append(vs, ro.Origin)
				}
			}
			for _, a := range x.Associations.Items {
				switch name {
				case "association.subnet-id":
					vs = append(vs, a.SubnetID)
				case "association.main":
					vs = append(vs, strconv.FormatBool(a.Main))
				case "association.route-table-association-id":
					vs = append(vs, a.RouteTableAssociationID)
				}
			}
			return vs
		})
		if ok {
			out.RouteTables.Items = append(out.RouteTables.Items, x)
		}
	}
	return out, nil
}

func ec2DescribeAddresses(r *request) (any, *APIError) {
	allocs, e := r.list("AllocationId")
	if e != nil {
		return nil, e
	}
	ips, e := r.list("PublicIp")
	if e != nil {
		return nil, e
	}
	fs, e := r.filters("allocation-id", "association-id", "public-ip", "instance-id", "network-interface-id",
		"network-interface-owner-id", "private-ip-address", "domain", "network-border-group", "tag-key", "tag-value")
	if e != nil {
		return nil, e
	}
	for _, id := range allocs {
		if _, e := r.allocation(id); e != nil {
			return nil, e
		}
	}
	for _, ip := range ips {
		if _, e := r.publicIP(ip); e != nil {
			return nil, e
		}
	}
	if e := r.authorize(); e != nil {
		return nil, e
	}
	out := &describeAddressesResponse{}
	for i := range r.w.st.Addresses {
		a := &r.w.st.Addresses[i]
		if len(allocs)+len(ips) > 0 && !slices.Contains(allocs, a.AllocationID) && !slices.Contains(ips, a.PublicIP) {
			continue
		}
		x := r.w.xmlAddress(a)
		ok := matches(fs, func(name string) []string {
			switch name {
			case "allocation-id":
				return []string{a.AllocationID}
			case "association-id":
				return []string{a.AssociationID}
			case "public-ip":
				return []string{a.PublicIP}
			case "instance-id":
				return []string{a.InstanceID}
			case "network-interface-id":
				return []string{a.NetworkInterfaceID}
			case "network-interface-owner-id":
				return []string{x.NetworkInterfaceOwnerID}
			case "private-ip-address":
				return []string{a.PrivateIPAddress}
			case "domain":
				return []string{"vpc"}
			case "network-border-group":
				return []string{x.NetworkBorderGroup}
			}
			return nil
		})
		if ok {
			out.Addresses.Items = append(out.Addresses.Items, x)
		}
	}
	return out, nil
}
