package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/pki"
)

func caCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca init|operator",
		Short: "Create the cluster's certificate authority (node identities)",
		Long: `Each node proves which node it is with its own certificate, issued by the
cluster's certificate authority (see lifeboat node cert, and the tls section of
the agent config). ca init creates that authority: ca.crt (give it to every
node) and ca.key (keep it off the nodes: whoever has it can issue a
certificate for any node).`,
	}
	var out, name string
	initCmd := &cobra.Command{
		Use:     "init",
		Short:   "Create ca.crt and ca.key (ECDSA P-256)",
		Example: "  lifeboat ca init --out /root/lifeboat-ca",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ca, err := pki.NewCA(name)
			if err != nil {
				return codeErr{exitFailure, err}
			}
			if err := pki.WriteCA(out, ca); err != nil {
				return codeErr{exitFailure, err}
			}
			fmt.Printf("wrote %s and %s (key id %s)\n", filepath.Join(out, pki.CACertFile), filepath.Join(out, pki.CAKeyFile), pki.KeyID(ca.Cert)[:16])
			fmt.Println("keep ca.key off the nodes; issue node certificates with: lifeboat node cert NAME --ca", out, "--out DIR")
			return nil
		},
	}
	initCmd.Flags().StringVar(&out, "out", "", "directory to write ca.crt and ca.key into (created 0700)")
	initCmd.Flags().StringVar(&name, "name", "lifeboat cluster CA", "the CA certificate's common name")
	_ = initCmd.MarkFlagRequired("out")
	cmd.AddCommand(initCmd, operatorCertCmd())
	return cmd
}

// operatorCertCmd is lifeboat ca operator: a client certificate with a
// role, which the API accepts instead of a token.
func operatorCertCmd() *cobra.Command {
	var caDir, out, role string
	var days int
	cmd := &cobra.Command{
		Use:   "operator NAME --role read|operate|admin --ca DIR --out DIR",
		Short: "Issue an operator's client certificate, with its role, from the cluster CA",
		Long: `Writes NAME.crt and NAME.key (0600) into --out: a client certificate that names
the operator and their role (URI SAN lifeboat://operator/NAME?role=ROLE). Agents
running with the cluster CA (their tls section) accept it instead of a bearer
token, with that role; the history names the operator. It can never act as a
node (client use only, no node name). It expires after --days (default 90);
to revoke one before, issue the CA again (new node certificates too) — keep
operator certificates short-lived.`,
		Example: `  lifeboat ca operator anna --role operate --ca /root/lifeboat-ca --out ~/.lifeboat
  LIFEBOAT_ADDR=10.0.0.11:7100 LIFEBOAT_CA_CERT=ca.crt lifeboat status --cert ~/.lifeboat/anna.crt --key ~/.lifeboat/anna.key`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return issueInto(caDir, out, args[0], days, "role "+role+", ", func(ca *pki.CA, validity time.Duration) (*pki.Issued, error) {
				return ca.IssueOperator(args[0], role, validity)
			})
		},
	}
	cmd.Flags().StringVar(&caDir, "ca", "", "the CA directory (ca.crt and ca.key, from lifeboat ca init)")
	cmd.Flags().StringVar(&out, "out", "", "directory to write NAME.crt and NAME.key into")
	cmd.Flags().StringVar(&role, "role", "", "read, operate or admin (see lifeboat tokens --help)")
	cmd.Flags().IntVar(&days, "days", 90, "validity in days")
	_ = cmd.MarkFlagRequired("ca")
	_ = cmd.MarkFlagRequired("out")
	_ = cmd.MarkFlagRequired("role")
	return cmd
}

func nodeCertCmd() *cobra.Command {
	var caDir, out string
	var hosts []string
	var days int
	cmd := &cobra.Command{
		Use:   "cert NODE",
		Short: "Issue a node's certificate from the cluster CA (renewal: issue again)",
		Long: `Writes NODE.crt and NODE.key (0600) into --out. The certificate names the node
(URI SAN lifeboat://node/NODE), so its peers know which node calls; --host adds
the node's addresses or host names. Copy both files and the CA's ca.crt to the
node and set the agent's tls section. To renew or rotate, issue again and
restart the node's agent; do nodes one at a time.`,
		Example: `  lifeboat node cert node1 --ca /root/lifeboat-ca --out /root/certs --host 10.0.0.11
  # on node1: tls: {ca: /etc/lifeboat/ca.crt, cert: /etc/lifeboat/node1.crt, key: /etc/lifeboat/node1.key}`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return issueInto(caDir, out, args[0], days, "", func(ca *pki.CA, validity time.Duration) (*pki.Issued, error) {
				return ca.Issue(args[0], hosts, validity)
			})
		},
	}
	cmd.Flags().StringVar(&caDir, "ca", "", "the CA directory (ca.crt and ca.key, from lifeboat ca init)")
	cmd.Flags().StringVar(&out, "out", "", "directory to write NODE.crt and NODE.key into")
	cmd.Flags().StringSliceVar(&hosts, "host", nil, "an IP address or host name of the node (repeat, or comma-separate)")
	cmd.Flags().IntVar(&days, "days", 365, "validity in days")
	_ = cmd.MarkFlagRequired("ca")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

// issueInto loads the CA from caDir, issues a certificate with issue for
// days, writes NAME.crt and NAME.key into out, and says so (what: words
// before the validity, "" for none).
func issueInto(caDir, out, name string, days int, what string, issue func(*pki.CA, time.Duration) (*pki.Issued, error)) error {
	if days <= 0 {
		return codeErr{exitUsage, fmt.Errorf("--days %d: must be 1 or more", days)}
	}
	ca, err := pki.LoadCA(caDir)
	if err != nil {
		return codeErr{exitFailure, fmt.Errorf("load the CA from --ca %s: %w", caDir, err)}
	}
	is, err := issue(ca, time.Duration(days)*24*time.Hour)
	if err != nil {
		return codeErr{exitUsage, err}
	}
	certPath, keyPath, err := pki.WriteIssued(out, name, is)
	if err != nil {
		return codeErr{exitFailure, err}
	}
	fmt.Printf("wrote %s and %s (%svalid until %s)\n", certPath, keyPath, what, is.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}
