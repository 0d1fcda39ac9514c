package main

// Bearer tokens from a CSV file (k8s.io/apiserver's tokenfile format), re-read whenever the
// file changes, so that a test can issue a ServiceAccount-style token without a restart:
//
//	token,system:serviceaccount:NAMESPACE:NAME,uid,"system:serviceaccounts,system:serviceaccounts:NAMESPACE"

import (
	"context"
	"os"
	"sync"
	"time"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/token/tokenfile"
	"k8s.io/klog/v2"
)

type tokenFile struct {
	path string

	mu       sync.Mutex
	modified time.Time
	size     int64
	tokens   *tokenfile.TokenAuthenticator
}

func newTokenFile(path string) *tokenFile {
	return &tokenFile{path: path}
}

func (f *tokenFile) AuthenticateToken(ctx context.Context, token string) (*authenticator.Response, bool, error) {
	tokens, err := f.current()
	if err != nil {
		return nil, false, err
	}
	return tokens.AuthenticateToken(ctx, token)
}

// current returns the tokens of the file as it is now, reloading it after a change.
func (f *tokenFile) current() (*tokenfile.TokenAuthenticator, error) {
	info, err := os.Stat(f.path)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tokens == nil || !info.ModTime().Equal(f.modified) || info.Size() != f.size {
		tokens, err := tokenfile.NewCSV(f.path)
		if err != nil {
			return nil, err
		}
		klog.InfoS("Loaded token file", "path", f.path)
		f.tokens, f.modified, f.size = tokens, info.ModTime(), info.Size()
	}
	return f.tokens, nil
}
