package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File names in a CA directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// WriteCA writes ca.crt (0644) and ca.key (0600) into dir, creating it
// (0700). It refuses to replace an existing ca.key: certificates issued by
// that CA would no longer verify against the new one.
func WriteCA(dir string, ca *CA) error {
	keyPath := filepath.Join(dir, CAKeyFile)
	if _, err := os.Stat(keyPath); err == nil {
		return fmt.Errorf("write CA: %s exists; a new CA would orphan every certificate it issued (remove it first, or choose another --out)", keyPath)
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write CA: create %s: %w", dir, err)
	}
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, CACertFile), ca.CertPEM(), 0o644)
}

// LoadCA reads ca.crt and ca.key from dir (as WriteCA wrote them).
func LoadCA(dir string) (*CA, error) {
	cert, err := ReadCert(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate (made by lifeboat ca init?)", filepath.Join(dir, CACertFile))
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	key, err := ReadKey(keyPath)
	if err != nil {
		return nil, err
	}
	if !matches(cert, key) {
		return nil, fmt.Errorf("%s is not the key of %s", keyPath, filepath.Join(dir, CACertFile))
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: the CA key must be ECDSA (made by lifeboat ca init)", keyPath)
	}
	return &CA{Cert: cert, Key: ek}, nil
}

// WriteIssued writes NAME.crt (0644) and NAME.key (0600) into dir,
// creating it (0700), replacing earlier files of that node (renewal): each
// file is written to a temporary name and renamed, so a node never reads a
// half-written one.
func WriteIssued(dir, node string, is *Issued) (certPath, keyPath string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("create %s: %w", dir, err)
	}
	certPath, keyPath = filepath.Join(dir, node+".crt"), filepath.Join(dir, node+".key")
	if err := writeFile(keyPath, is.KeyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := writeFile(certPath, is.CertPEM, 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

func writeFile(path string, data []byte, mode fs.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp, mode); err != nil { // WriteFile keeps an existing file's mode
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// ReadCert reads the first certificate of a PEM file.
func ReadCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s holds no PEM certificate", path)
		}
		if blk.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return c, nil
		}
	}
}

// ReadKey reads a PEM private key (PKCS #8, or SEC 1 "EC PRIVATE KEY")
// that group and others cannot read.
func ReadKey(path string) (crypto.Signer, error) {
	if err := CheckPrivate(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s holds no PEM private key", path)
		}
		var k any
		switch blk.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: unsupported key type %T", path, k)
		}
		return s, nil
	}
}

// CheckPrivate fails when group or others may read the file.
func CheckPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("read key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s is readable by group or others (mode %04o): chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	return nil
}
