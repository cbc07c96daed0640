package awsapi

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go/middleware"
)

// Metered returns a copy of c whose EC2 and STS clients call sent for
// every request they send, each retry included (the metadata service is
// not metered: it is no AWS API call). c itself is unchanged: the calls
// made through it are not counted and never wait for anyone's meter.
func (c *Clients) Metered(sent func()) *Clients {
	meter := func(stack *middleware.Stack) error {
		// After the retry middleware: once per attempt.
		return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("lifeboatMeter",
			func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
				sent()
				return next.HandleFinalize(ctx, in)
			}), middleware.After)
	}
	m := *c
	if c.EC2 != nil {
		m.EC2 = ec2.New(c.EC2.Options(), func(o *ec2.Options) { o.APIOptions = append(o.APIOptions, meter) })
	}
	if c.STS != nil {
		m.STS = sts.New(c.STS.Options(), func(o *sts.Options) { o.APIOptions = append(o.APIOptions, meter) })
	}
	return &m
}
