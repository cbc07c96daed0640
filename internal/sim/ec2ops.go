package sim

import (
	"net/http"
	"net/netip"
	"strings"
)

// Route and Elastic IP changes, and network interface attributes.

// routeTarget is a parsed route target.
type routeTarget struct {
	eni     *NetworkInterface
	gateway string
}

// unsupportedTargets are CreateRoute/ReplaceRoute targets that exist in EC2
// but not in the simulator.
var unsupportedTargets = []string{"NatGatewayId", "TransitGatewayId", "VpcPeeringConnectionId", "EgressOnlyInternetGatewayId",
	"LocalGatewayId", "CarrierGatewayId", "VpcEndpointId", "CoreNetworkArn", "OdbNetworkArn"}

// routeParams validates RouteTableId, DestinationCidrBlock and (when
// needTarget) exactly one target.
func (r *request) routeParams(needTarget bool) (*RouteTable, string, routeTarget, *APIError) {
	var t routeTarget
	id, e := r.required("RouteTableId")
	if e != nil {
		return nil, "", t, e
	}
	if r.params.Get("DestinationIpv6CidrBlock") != "" || r.params.Get("DestinationPrefixListId") != "" {
		return nil, "", t, errorf(http.StatusBadRequest, "InvalidParameterValue", "The simulator supports IPv4 destination CIDR blocks only.")
	}
	dest, e := r.required("DestinationCidrBlock")
	if e != nil {
		return nil, "", t, e
	}
	if p, err := netip.ParsePrefix(dest); err != nil || !p.Addr().Is4() || p.Masked() != p {
		return nil, "", t, errorf(http.StatusBadRequest, "InvalidParameterValue", "Value (%s) for parameter destinationCidrBlock is invalid. This is not a valid CIDR block.", dest)
	}
	rt, e := r.routeTable(id)
	if e != nil || !needTarget {
		return rt, dest, t, e
	}
	var given []string
	for _, k := range append([]string{"NetworkInterfaceId", "InstanceId", "GatewayId"}, unsupportedTargets...) {
		if r.params.Get(k) != "" {
			given = append(given, k)
		}
	}
	switch {
	case len(given) == 0:
		return nil, "", t, errorf(http.StatusBadRequest, "MissingParameter", "The request must contain exactly one of gatewayId, natGatewayId, networkInterfaceId, vpcPeeringConnectionId, egressOnlyInternetGatewayId, transitGatewayId, localGatewayId, carrierGatewayId or instanceId")
	case len(given) > 1:
		return nil, "", t, errorf(http.StatusBadRequest, "InvalidParameterCombination", "The parameter %s cannot be used with the parameter %s", given[0], given[1])
	}
	switch v := r.params.Get(given[0]); given[0] {
	case "NetworkInterfaceId":
		if t.eni, e = r.eni(v); e != nil {
			return nil, "", t, e
		}
	case "InstanceId":
		in, e := r.instance(v)
		if e != nil {
			return nil, "", t, e
		}
		if t.eni, e = r.onlyENI(in); e != nil {
			return nil, "", t, e
		}
	case "GatewayId":
		if !strings.HasPrefix(v, "igw-") {
			return nil, "", t, errorf(http.StatusBadRequest, "InvalidGatewayID.NotFound", "The gateway ID '%s' does not exist", v)
		}
		t.gateway = v
	default:
		return nil, "", t, errorf(http.StatusBadRequest, "InvalidParameterValue", "The simulator does not support the route target %s.", given[0])
	}
	if t.eni != nil && r.w.vpcOfSubnet(t.eni.SubnetID) != rt.VpcID {
		return nil, "", t, errorf(http.StatusBadRequest, "InvalidParameterValue", "Route table %s and network interface %s belong to different networks", rt.ID, t.eni.ID)
	}
	return rt, dest, t, nil
}

func (t routeTarget) route(dest string) Route {
	ro := Route{DestinationCidrBlock: dest, GatewayID: t.gateway, State: "active", Origin: "CreateRoute"}
	if t.eni != nil {
		ro.NetworkInterfaceID = t.eni.ID
		if t.eni.Attachment != nil {
			ro.InstanceID = t.eni.Attachment.InstanceID
		}
	}
	return ro
}

// routeChanged records a created or replaced route for Options.RouteHook.
func (r *request) routeChanged(table string, ro Route) {
	r.changed = &routeChange{table: table, dest: ro.DestinationCidrBlock, eni: ro.NetworkInterfaceID}
}

func routeIndex(rt *RouteTable, dest string) int {
	for i, ro := range rt.Routes {
		if ro.DestinationCidrBlock == dest {
			return i
		}
	}
	return -1
}

// noRouteToReplace is EC2's answer to ReplaceRoute for a destination the
// table has no route for: InvalidParameterValue (not InvalidRoute.NotFound,
// which DeleteRoute answers), as AWS answers it today.
func noRouteToReplace(dest string) *APIError {
	return errorf(http.StatusBadRequest, "InvalidParameterValue", "There is no route defined for '%s' in the route table. Use CreateRoute instead.", dest)
}

// noRouteToDelete is EC2's answer to DeleteRoute for a destination the
// table has no route for.
func noRouteToDelete(rt *RouteTable, dest string) *APIError {
	return errorf(http.StatusBadRequest, "InvalidRoute.NotFound", "no route with destination-cidr-block %s in route table %s", dest, rt.ID)
}

func ec2CreateRoute(r *request) (any, *APIError) {
	rt, dest, t, e := r.routeParams(true)
	if e != nil {
		return nil, e
	}
	if routeIndex(rt, dest) >= 0 {
		return nil, errorf(http.StatusBadRequest, "RouteAlreadyExists", "The route identified by %s already exists.", dest)
	}
	if e := r.authorize(r.arn("route-table", rt.ID)); e != nil {
		return nil, e
	}
	ro := t.route(dest)
	rt.Routes = append(rt.Routes, ro)
	r.routeChanged(rt.ID, ro)
	return &xmlReturn{Return: true}, nil
}

func ec2ReplaceRoute(r *request) (any, *APIError) {
	rt, dest, t, e := r.routeParams(true)
	if e != nil {
		return nil, e
	}
	i := routeIndex(rt, dest)
	switch {
	case i < 0:
		return nil, noRouteToReplace(dest)
	case rt.Routes[i].GatewayID == "local":
		return nil, errorf(http.StatusBadRequest, "InvalidParameterValue", "Cannot replace local route %s in route table %s", dest, rt.ID)
	}
	if e := r.authorize(r.arn("route-table", rt.ID)); e != nil {
		return nil, e
	}
	rt.Routes[i] = t.route(dest)
	r.routeChanged(rt.ID, rt.Routes[i])
	return &xmlReturn{Return: true}, nil
}

func ec2DeleteRoute(r *request) (any, *APIError) {
	rt, dest, _, e := r.routeParams(false)
	if e != nil {
		return nil, e
	}
	i := routeIndex(rt, dest)
	switch {
	case i < 0:
		return nil, noRouteToDelete(rt, dest)
	case rt.Routes[i].GatewayID == "local":
		return nil, errorf(http.StatusBadRequest, "InvalidParameterValue", "cannot remove local route %s in route table %s", dest, rt.ID)
	}
	if e := r.authorize(r.arn("route-table", rt.ID)); e != nil {
		return nil, e
	}
	rt.Routes = append(rt.Routes[:i:i], rt.Routes[i+1:]...)
	return &xmlReturn{Return: true}, nil
}

func ec2AllocateAddress(r *request) (any, *APIError) {
	if d := r.params.Get("Domain"); d != "" && d != "vpc" {
		return nil, errorf(http.StatusBadRequest, "InvalidParameterValue", "Value (%s) for parameter domain is invalid. The simulator supports 'vpc' only.", d)
	}
	ip := r.w.freePublicIP()
	if ip == "" {
		return nil, errorf(http.StatusBadRequest, "AddressLimitExceeded", "The maximum number of addresses has been reached.")
	}
	if e := r.authorize(r.arn("elastic-ip", r.w.peekID("eipalloc"))); e != nil {
		return nil, e
	}
	a := Address{AllocationID: r.w.newID("eipalloc"), PublicIP: ip}
	r.w.st.Addresses = append(r.w.st.Addresses, a)
	return &allocateAddressResponse{PublicIP: ip, Domain: "vpc", AllocationID: a.AllocationID, PublicIPv4Pool: "amazon", NetworkBorderGroup: r.w.st.Region}, nil
}

func ec2AssociateAddress(r *request) (any, *APIError) {
	var addr *Address
	var e *APIError
	switch alloc, pub := r.params.Get("AllocationId"), r.params.Get("PublicIp"); {
	case alloc != "":
		addr, e = r.allocation(alloc)
	case pub != "":
		addr, e = r.publicIP(pub)
	default:
		e = errorf(http.StatusBadRequest, "MissingParameter", "Either public IP or allocation id must be specified")
	}
	if e != nil {
		return nil, e
	}
	allow, e := r.boolParam("AllowReassociation")
	if e != nil {
		return nil, e
	}
	var eni *NetworkInterface
	resources := []string{r.arn("elastic-ip", addr.AllocationID)}
	switch eniID, instID := r.params.Get("NetworkInterfaceId"), r.params.Get("InstanceId"); {
	case eniID != "" && instID != "":
		return nil, errorf(http.StatusBadRequest, "InvalidParameterCombination", "You can specify either an instance ID or a network interface ID, but not both.")
	case eniID != "":
		if eni, e = r.eni(eniID); e != nil {
			return nil, e
		}
	case instID != "":
		in, e := r.instance(instID)
		if e != nil {
			return nil, e
		}
		if eni, e = r.onlyENI(in); e != nil {
			return nil, e
		}
	default:
		return nil, errorf(http.StatusBadRequest, "MissingParameter", "Either instance ID or network interface id must be specified")
	}
	resources = append(resources, r.arn("network-interface", eni.ID))
	inst := ""
	if eni.Attachment != nil {
		inst = eni.Attachment.InstanceID
		resources = append(resources, r.arn("instance", inst))
	}
	ip := r.params.Get("PrivateIpAddress")
	if ip == "" {
		ip = eni.PrivateIP
	} else if !hasIP(eni, ip) {
		return nil, errorf(http.StatusBadRequest, "InvalidParameterValue", "The private IP address %s is not an address of the network interface %s.", ip, eni.ID)
	}
	if addr.AssociationID != "" && !allow {
		return nil, errorf(http.StatusBadRequest, "Resource.AlreadyAssociated", "resource %s is already associated with associate-id %s", addr.AllocationID, addr.AssociationID)
	}
	if e := r.authorize(resources...); e != nil {
		return nil, e
	}
	// One public IP per private IP: a previous Elastic IP there is released.
	for i := range r.w.st.Addresses {
		if other := &r.w.st.Addresses[i]; other != addr && other.NetworkInterfaceID == eni.ID && other.PrivateIPAddress == ip {
			disassociate(other)
		}
	}
	addr.AssociationID = r.w.newID("eipassoc")
	addr.NetworkInterfaceID, addr.PrivateIPAddress, addr.InstanceID = eni.ID, ip, inst
	return &associateAddressResponse{Return: true, AssociationID: addr.AssociationID}, nil
}

func disassociate(a *Address) {
	a.AssociationID, a.NetworkInterfaceID, a.PrivateIPAddress, a.InstanceID = "", "", "", ""
}

func ec2DisassociateAddress(r *request) (any, *APIError) {
	var addr *Address
	switch assoc, pub := r.params.Get("AssociationId"), r.params.Get("PublicIp"); {
	case assoc != "":
		if !strings.HasPrefix(assoc, "eipassoc-") {
			return nil, malformed("InvalidAssociationID", assoc)
		}
		for i := range r.w.st.Addresses {
			if a := &r.w.st.Addresses[i]; a.AssociationID == assoc {
				addr = a
			}
		}
		if addr == nil {
			return nil, errorf(http.StatusBadRequest, "InvalidAssociationID.NotFound", "The association ID '%s' does not exist", assoc)
		}
	case pub != "":
		a, e := r.publicIP(pub)
		if e != nil {
			return nil, e
		}
		if a.AssociationID == "" {
			return nil, errorf(http.StatusBadRequest, "InvalidAssociationID.NotFound", "The address '%s' is not associated", pub)
		}
		addr = a
	default:
		return nil, errorf(http.StatusBadRequest, "MissingParameter", "Either public IP or association id must be specified")
	}
	if e := r.authorize(r.arn("elastic-ip", addr.AllocationID)); e != nil {
		return nil, e
	}
	disassociate(addr)
	return &xmlReturn{Return: true}, nil
}

func ec2DescribeNetworkInterfaceAttribute(r *request) (any, *APIError) {
	id, e := r.required("NetworkInterfaceId")
	if e != nil {
		return nil, e
	}
	eni, e := r.eni(id)
	if e != nil {
		return nil, e
	}
	attr, e := r.required("Attribute")
	if e != nil {
		return nil, e
	}
	out := &describeNetworkInterfaceAttributeResponse{NetworkInterfaceID: eni.ID}
	switch attr {
	case "sourceDestCheck":
		out.SourceDestCheck = &xmlBoolValue{*eni.SourceDestCheck}
	case "description":
		out.Description = &xmlStringValue{eni.Description}
	case "groupSet":
		out.Groups = &itemSet[xmlGroup]{}
	case "attachment":
		out.Attachment = r.w.xmlENI(eni, false).Attachment
	default:
		return nil, errorf(http.StatusBadRequest, "InvalidParameterValue", "Value (%s) for parameter attribute is invalid. Unknown attribute.", attr)
	}
	if e := r.authorize(); e != nil {
		return nil, e
	}
	return out, nil
}

func ec2ModifyNetworkInterfaceAttribute(r *request) (any, *APIError) {
	id, e := r.required("NetworkInterfaceId")
	if e != nil {
		return nil, e
	}
	eni, e := r.eni(id)
	if e != nil {
		return nil, e
	}
	var attrs []string
	for k := range r.params {
		switch {
		case k == "SourceDestCheck.Value", k == "Description.Value":
			attrs = append(attrs, k)
		case strings.HasPrefix(k, "SecurityGroupId."), strings.HasPrefix(k, "Attachment."), strings.HasPrefix(k, "EnaSrdSpecification."),
			strings.HasPrefix(k, "ConnectionTrackingSpecification."), k == "AssociatePublicIpAddress", k == "EnablePrimaryIpv6":
			return nil, errorf(http.StatusBadRequest, "InvalidParameterValue", "The simulator does not support modifying %s.", k)
		}
	}
	switch len(attrs) {
	case 0:
		return nil, errorf(http.StatusBadRequest, "InvalidParameterCombination", "No attributes specified.")
	case 1:
	default:
		return nil, errorf(http.StatusBadRequest, "InvalidParameterCombination", "Fields for multiple attribute types specified: %s", strings.Join(attrs, ", "))
	}
	var check bool
	if attrs[0] == "SourceDestCheck.Value" {
		if r.params.Get("SourceDestCheck.Value") == "" {
			return nil, errorf(http.StatusBadRequest, "InvalidParameterValue", "Value () for parameter sourceDestCheck is invalid. Expected: 'true' or 'false'.")
		}
		if check, e = r.boolParam("SourceDestCheck.Value"); e != nil {
			return nil, e
		}
	}
	if e := r.authorize(r.arn("network-interface", eni.ID)); e != nil {
		return nil, e
	}
	if attrs[0] == "SourceDestCheck.Value" {
		eni.SourceDestCheck = &check
	} else {
		eni.Description = r.params.Get("Description.Value")
	}
	return &xmlReturn{Return: true}, nil
}
