package view

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestGates: NodeExists and ServiceAccountExists follow the cache, and a
// deleted Node is reported once the cache has dropped it.
func TestGates(t *testing.T) {
	node := func(n string) *corev1.Node { return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}} }
	sa := func(ns, n string) *corev1.ServiceAccount {
		return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: n}}
	}
	client := fake.NewClientset(node("n1"), node("n2"), sa("apps", "web"), sa("apps", "db"))
	var mu sync.Mutex
	var deleted []string
	w, err := NewWatcher(client, fakeDynamic(t), Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	sink := sinkFuncs{nodeDeleted: func(n string) {
		mu.Lock()
		defer mu.Unlock()
		if w.NodeExists(n) {
			t.Errorf("NodeDeleted(%s) while NodeExists is still true", n)
		}
		deleted = append(deleted, n)
	}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, sink) }()
	t.Cleanup(func() { cancel(); <-done })
	waitTrue(t, "caches synced", w.HasSynced)
	cs := client.CoreV1()
	tests := []struct {
		name    string
		change  func() error
		nodes   map[string]bool
		sas     map[string]bool // namespace/name
		deleted []string
	}{
		{"initial objects", nil, map[string]bool{"n1": true, "n2": true, "n3": false},
			map[string]bool{"apps/web": true, "apps/db": true, "other/web": false}, nil},
		{"node deleted", func() error { return cs.Nodes().Delete(ctx, "n2", metav1.DeleteOptions{}) },
			map[string]bool{"n1": true, "n2": false}, nil, []string{"n2"}},
		{"node registered", func() error { _, err := cs.Nodes().Create(ctx, node("n3"), metav1.CreateOptions{}); return err },
			map[string]bool{"n3": true}, nil, []string{"n2"}},
		{"service account deleted", func() error { return cs.ServiceAccounts("apps").Delete(ctx, "db", metav1.DeleteOptions{}) },
			nil, map[string]bool{"apps/web": true, "apps/db": false}, []string{"n2"}},
		{"service account created", func() error {
			_, err := cs.ServiceAccounts("other").Create(ctx, sa("other", "web"), metav1.CreateOptions{})
			return err
		},
			nil, map[string]bool{"other/web": true}, []string{"n2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.change != nil {
				if err := tt.change(); err != nil {
					t.Fatal(err)
				}
			}
			waitTrue(t, "cache follows the change", func() bool {
				for n, want := range tt.nodes {
					if w.NodeExists(n) != want {
						return false
					}
				}
				for k, want := range tt.sas {
					ns, name, _ := strings.Cut(k, "/")
					if w.ServiceAccountExists(ns, name) != want {
						return false
					}
				}
				mu.Lock()
				defer mu.Unlock()
				return slices.Equal(deleted, tt.deleted)
			})
		})
	}
}

func waitTrue(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
