package sim

import (
	"fmt"
	"strings"
	"time"
)

// XML shapes of EC2 Query API responses, named after the elements the AWS
// SDK's ec2 deserializers read.

// itemSet is an EC2 list: <fooSet><item>…</item></fooSet> (emitted even
// when empty, as EC2 does).
type itemSet[T any] struct {
	Items []T `xml:"item"`
}

type xmlTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

type xmlGroup struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

type xmlBoolValue struct {
	Value bool `xml:"value"`
}

type xmlStringValue struct {
	Value string `xml:"value"`
}

type xmlReturn struct {
	ec2Meta
	Return bool `xml:"return"`
}

type xmlRoute struct {
	DestinationCidrBlock string `xml:"destinationCidrBlock"`
	GatewayID            string `xml:"gatewayId,omitempty"`
	InstanceID           string `xml:"instanceId,omitempty"`
	InstanceOwnerID      string `xml:"instanceOwnerId,omitempty"`
	NetworkInterfaceID   string `xml:"networkInterfaceId,omitempty"`
	State                string `xml:"state"`
	Origin               string `xml:"origin"`
}

type xmlRouteTableAssociation struct {
	RouteTableAssociationID string `xml:"routeTableAssociationId"`
	RouteTableID            string `xml:"routeTableId"`
	SubnetID                string `xml:"subnetId,omitempty"`
	Main                    bool   `xml:"main"`
	AssociationState        struct {
		State string `xml:"state"`
	} `xml:"associationState"`
}

type xmlRouteTable struct {
	RouteTableID string                            `xml:"routeTableId"`
	VpcID        string                            `xml:"vpcId"`
	OwnerID      string                            `xml:"ownerId"`
	Routes       itemSet[xmlRoute]                 `xml:"routeSet"`
	Associations itemSet[xmlRouteTableAssociation] `xml:"associationSet"`
	Propagating  itemSet[struct {
		GatewayID string `xml:"gatewayId"`
	}] `xml:"propagatingVgwSet"`
	Tags itemSet[xmlTag] `xml:"tagSet"`
}

type xmlAssociation struct {
	AllocationID  string `xml:"allocationId,omitempty"`
	AssociationID string `xml:"associationId,omitempty"`
	IPOwnerID     string `xml:"ipOwnerId"`
	PublicDNSName string `xml:"publicDnsName"`
	PublicIP      string `xml:"publicIp"`
}

type xmlPrivateIP struct {
	PrivateIPAddress string          `xml:"privateIpAddress"`
	PrivateDNSName   string          `xml:"privateDnsName"`
	Primary          bool            `xml:"primary"`
	Association      *xmlAssociation `xml:"association,omitempty"`
}

type xmlAttachment struct {
	AttachmentID        string `xml:"attachmentId"`
	InstanceID          string `xml:"instanceId,omitempty"`
	InstanceOwnerID     string `xml:"instanceOwnerId,omitempty"`
	DeviceIndex         int    `xml:"deviceIndex"`
	NetworkCardIndex    int    `xml:"networkCardIndex"`
	Status              string `xml:"status"`
	AttachTime          string `xml:"attachTime"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
}

// xmlNetworkInterface serves both DescribeNetworkInterfaces and the
// networkInterfaceSet of DescribeInstances (the SDK ignores elements a
// shape does not have).
type xmlNetworkInterface struct {
	NetworkInterfaceID string                `xml:"networkInterfaceId"`
	SubnetID           string                `xml:"subnetId"`
	VpcID              string                `xml:"vpcId"`
	AvailabilityZone   string                `xml:"availabilityZone,omitempty"`
	Description        string                `xml:"description"`
	OwnerID            string                `xml:"ownerId"`
	RequesterManaged   *bool                 `xml:"requesterManaged,omitempty"`
	Status             string                `xml:"status"`
	MacAddress         string                `xml:"macAddress"`
	PrivateIPAddress   string                `xml:"privateIpAddress"`
	PrivateDNSName     string                `xml:"privateDnsName"`
	SourceDestCheck    bool                  `xml:"sourceDestCheck"`
	Groups             itemSet[xmlGroup]     `xml:"groupSet"`
	Attachment         *xmlAttachment        `xml:"attachment,omitempty"`
	Association        *xmlAssociation       `xml:"association,omitempty"`
	Tags               *itemSet[xmlTag]      `xml:"tagSet,omitempty"`
	PrivateIPs         itemSet[xmlPrivateIP] `xml:"privateIpAddressesSet"`
	InterfaceType      string                `xml:"interfaceType"`
}

type xmlInstance struct {
	InstanceID    string `xml:"instanceId"`
	ImageID       string `xml:"imageId"`
	InstanceState struct {
		Code int    `xml:"code"`
		Name string `xml:"name"`
	} `xml:"instanceState"`
	PrivateDNSName string `xml:"privateDnsName"`
	DNSName        string `xml:"dnsName"`
	Reason         string `xml:"reason"`
	AmiLaunchIndex int    `xml:"amiLaunchIndex"`
	InstanceType   string `xml:"instanceType"`
	LaunchTime     string `xml:"launchTime"`
	Placement      struct {
		AvailabilityZone string `xml:"availabilityZone"`
		GroupName        string `xml:"groupName"`
		Tenancy          string `xml:"tenancy"`
	} `xml:"placement"`
	Monitoring struct {
		State string `xml:"state"`
	} `xml:"monitoring"`
	SubnetID           string            `xml:"subnetId"`
	VpcID              string            `xml:"vpcId"`
	PrivateIPAddress   string            `xml:"privateIpAddress"`
	IPAddress          string            `xml:"ipAddress,omitempty"`
	SourceDestCheck    bool              `xml:"sourceDestCheck"`
	Groups             itemSet[xmlGroup] `xml:"groupSet"`
	Architecture       string            `xml:"architecture"`
	RootDeviceType     string            `xml:"rootDeviceType"`
	RootDeviceName     string            `xml:"rootDeviceName"`
	VirtualizationType string            `xml:"virtualizationType"`
	Hypervisor         string            `xml:"hypervisor"`
	IamInstanceProfile *struct {
		Arn string `xml:"arn"`
		ID  string `xml:"id"`
	} `xml:"iamInstanceProfile,omitempty"`
	NetworkInterfaces itemSet[xmlNetworkInterface] `xml:"networkInterfaceSet"`
	Tags              itemSet[xmlTag]              `xml:"tagSet"`
	EnaSupport        bool                         `xml:"enaSupport"`
	MetadataOptions   struct {
		State                   string `xml:"state"`
		HTTPTokens              string `xml:"httpTokens"`
		HTTPPutResponseHopLimit int    `xml:"httpPutResponseHopLimit"`
		HTTPEndpoint            string `xml:"httpEndpoint"`
	} `xml:"metadataOptions"`
}

type xmlReservation struct {
	ReservationID string               `xml:"reservationId"`
	OwnerID       string               `xml:"ownerId"`
	Groups        itemSet[xmlGroup]    `xml:"groupSet"`
	Instances     itemSet[xmlInstance] `xml:"instancesSet"`
}

type xmlAddress struct {
	PublicIP                string          `xml:"publicIp"`
	AllocationID            string          `xml:"allocationId"`
	Domain                  string          `xml:"domain"`
	AssociationID           string          `xml:"associationId,omitempty"`
	InstanceID              string          `xml:"instanceId,omitempty"`
	NetworkInterfaceID      string          `xml:"networkInterfaceId,omitempty"`
	NetworkInterfaceOwnerID string          `xml:"networkInterfaceOwnerId,omitempty"`
	PrivateIPAddress        string          `xml:"privateIpAddress,omitempty"`
	PublicIPv4Pool          string          `xml:"publicIpv4Pool"`
	NetworkBorderGroup      string          `xml:"networkBorderGroup"`
	Tags                    itemSet[xmlTag] `xml:"tagSet"`
}

// Response bodies.

type describeInstancesResponse struct {
	ec2Meta
	Reservations itemSet[xmlReservation] `xml:"reservationSet"`
}

type describeNetworkInterfacesResponse struct {
	ec2Meta
	NetworkInterfaces itemSet[xmlNetworkInterface] `xml:"networkInterfaceSet"`
}

type describeRouteTablesResponse struct {
	ec2Meta
	RouteTables itemSet[xmlRouteTable] `xml:"routeTableSet"`
}

type describeAddressesResponse struct {
	ec2Meta
	Addresses itemSet[xmlAddress] `xml:"addressesSet"`
}

type allocateAddressResponse struct {
	ec2Meta
	PublicIP           string `xml:"publicIp"`
	Domain             string `xml:"domain"`
	AllocationID       string `xml:"allocationId"`
	PublicIPv4Pool     string `xml:"publicIpv4Pool"`
	NetworkBorderGroup string `xml:"networkBorderGroup"`
}

type associateAddressResponse struct {
	ec2Meta
	Return        bool   `xml:"return"`
	AssociationID string `xml:"associationId"`
}

type describeNetworkInterfaceAttributeResponse struct {
	ec2Meta
	NetworkInterfaceID string             `xml:"networkInterfaceId"`
	SourceDestCheck    *xmlBoolValue      `xml:"sourceDestCheck,omitempty"`
	Description        *xmlStringValue    `xml:"description,omitempty"`
	Attachment         *xmlAttachment     `xml:"attachment,omitempty"`
	Groups             *itemSet[xmlGroup] `xml:"groupSet,omitempty"`
}

// Rendering of world objects (w.mu held).

func ec2Time(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func (w *World) privateDNS(ip string) string {
	host := "ip-" + strings.ReplaceAll(ip, ".", "-")
	if w.st.Region == "us-east-1" {
		return host + ".ec2.internal"
	}
	return host + "." + w.st.Region + ".compute.internal"
}

func (w *World) publicDNS(ip string) string {
	host := "ec2-" + strings.ReplaceAll(ip, ".", "-")
	if w.st.Region == "us-east-1" {
		return host + ".compute-1.amazonaws.com"
	}
	return host + "." + w.st.Region + ".compute.amazonaws.com"
}

// eipFor returns the Elastic IP associated with a private IP of an ENI.
func (w *World) eipFor(eniID, ip string) *Address {
	for i := range w.st.Addresses {
		a := &w.st.Addresses[i]
		if a.NetworkInterfaceID == eniID && a.PrivateIPAddress == ip {
			return a
		}
	}
	return nil
}

func (w *World) xmlAssoc(a *Address) *xmlAssociation {
	if a == nil {
		return nil
	}
	return &xmlAssociation{AllocationID: a.AllocationID, AssociationID: a.AssociationID, IPOwnerID: w.st.AccountID,
		PublicDNSName: w.publicDNS(a.PublicIP), PublicIP: a.PublicIP}
}

func (w *World) xmlENI(e *NetworkInterface, forInstance bool) xmlNetworkInterface {
	acct := w.st.AccountID
	x := xmlNetworkInterface{
		NetworkInterfaceID: e.ID, SubnetID: e.SubnetID, VpcID: w.vpcOfSubnet(e.SubnetID), Description: e.Description,
		OwnerID: acct, Status: "available", MacAddress: e.MAC, PrivateIPAddress: e.PrivateIP,
		PrivateDNSName: w.privateDNS(e.PrivateIP), SourceDestCheck: *e.SourceDestCheck, InterfaceType: "interface",
		Association: w.xmlAssoc(w.eipFor(e.ID, e.PrivateIP)),
	}
	if !forInstance {
		f := false
		x.RequesterManaged = &f
		x.Tags = &itemSet[xmlTag]{}
		if sn := w.subnet(e.SubnetID); sn != nil {
			x.AvailabilityZone = sn.AvailabilityZone
		}
	}
	for i, ip := range append([]string{e.PrivateIP}, e.SecondaryPrivateIPs...) {
		x.PrivateIPs.Items = append(x.PrivateIPs.Items, xmlPrivateIP{PrivateIPAddress: ip, PrivateDNSName: w.privateDNS(ip),
			Primary: i == 0, Association: w.xmlAssoc(w.eipFor(e.ID, ip))})
	}
	if a := e.Attachment; a != nil {
		x.Status = "in-use"
		x.Attachment = &xmlAttachment{AttachmentID: a.ID, DeviceIndex: a.DeviceIndex, Status: "attached",
			DeleteOnTermination: a.DeviceIndex == 0, AttachTime: ec2Time(w.launchTime(a.InstanceID))}
		if !forInstance {
			x.Attachment.InstanceID, x.Attachment.InstanceOwnerID = a.InstanceID, acct
		}
	}
	return x
}

func (w *World) launchTime(instanceID string) time.Time {
	if in := w.instance(instanceID); in != nil && !in.LaunchTime.IsZero() {
		return in.LaunchTime
	}
	return time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
}

func (w *World) xmlInstance(in *Instance) xmlInstance {
	x := xmlInstance{InstanceID: in.ID, ImageID: "ami-0000000000000000a", PrivateDNSName: w.privateDNS(in.PrivateIP),
		InstanceType: "t3.micro", LaunchTime: ec2Time(w.launchTime(in.ID)), SubnetID: in.SubnetID,
		VpcID: w.vpcOfSubnet(in.SubnetID), PrivateIPAddress: in.PrivateIP, SourceDestCheck: true, Architecture: "x86_64",
		RootDeviceType: "ebs", RootDeviceName: "/dev/xvda", VirtualizationType: "hvm", Hypervisor: "xen", EnaSupport: true}
	x.InstanceState.Code, x.InstanceState.Name = 16, "running"
	x.Placement.AvailabilityZone, x.Placement.Tenancy = in.AvailabilityZone, "default"
	x.Monitoring.State = "disabled"
	x.MetadataOptions.State, x.MetadataOptions.HTTPTokens = "applied", "required"
	x.MetadataOptions.HTTPPutResponseHopLimit, x.MetadataOptions.HTTPEndpoint = 2, "enabled"
	if in.Role != "" {
		x.IamInstanceProfile = &struct {
			Arn string `xml:"arn"`
			ID  string `xml:"id"`
		}{fmt.Sprintf("arn:aws:iam::%s:instance-profile/%s", w.st.AccountID, in.Role), "AIPA" + strings.TrimPrefix(w.roleID(in.Role), "AROA")}
	}
	for i, e := range w.instanceENIs(in.ID) {
		if i == 0 {
			x.SourceDestCheck = *e.SourceDestCheck
			if a := w.eipFor(e.ID, e.PrivateIP); a != nil {
				x.IPAddress, x.DNSName = a.PublicIP, w.publicDNS(a.PublicIP)
			}
		}
		x.NetworkInterfaces.Items = append(x.NetworkInterfaces.Items, w.xmlENI(e, true))
	}
	if in.Name != "" {
		x.Tags.Items = []xmlTag{{"Name", in.Name}}
	}
	return x
}

func (w *World) roleID(name string) string {
	if r := w.role(name); r != nil {
		return r.ID
	}
	return ""
}

func (w *World) xmlRouteTable(rt *RouteTable) xmlRouteTable {
	x := xmlRouteTable{RouteTableID: rt.ID, VpcID: rt.VpcID, OwnerID: w.st.AccountID}
	for _, r := range rt.Routes {
		xr := xmlRoute{DestinationCidrBlock: r.DestinationCidrBlock, GatewayID: r.GatewayID, NetworkInterfaceID: r.NetworkInterfaceID,
			State: r.State, Origin: r.Origin}
		if r.NetworkInterfaceID != "" {
			if inst := w.attachedInstance(r.NetworkInterfaceID); inst != "" {
				xr.InstanceID, xr.InstanceOwnerID = inst, w.st.AccountID
			} else {
				xr.State = "blackhole"
			}
		}
		x.Routes.Items = append(x.Routes.Items, xr)
	}
	suffix := strings.TrimPrefix(rt.ID, "rtb-")
	if rt.Main {
		a := xmlRouteTableAssociation{RouteTableAssociationID: "rtbassoc-" + suffix, RouteTableID: rt.ID, Main: true}
		a.AssociationState.State = "associated"
		x.Associations.Items = append(x.Associations.Items, a)
	}
	for _, s := range rt.Subnets {
		a := xmlRouteTableAssociation{RouteTableAssociationID: "rtbassoc-" + strings.TrimPrefix(s, "subnet-"), RouteTableID: rt.ID, SubnetID: s}
		a.AssociationState.State = "associated"
		x.Associations.Items = append(x.Associations.Items, a)
	}
	return x
}

func (w *World) xmlAddress(a *Address) xmlAddress {
	x := xmlAddress{PublicIP: a.PublicIP, AllocationID: a.AllocationID, Domain: "vpc", AssociationID: a.AssociationID,
		InstanceID: a.InstanceID, NetworkInterfaceID: a.NetworkInterfaceID, PrivateIPAddress: a.PrivateIPAddress,
		PublicIPv4Pool: "amazon", NetworkBorderGroup: w.st.Region}
	if a.NetworkInterfaceID != "" {
		x.NetworkInterfaceOwnerID = w.st.AccountID
	}
	return x
}
