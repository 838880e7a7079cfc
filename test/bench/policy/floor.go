package policy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
)

// watchFloor is a plain informer on the bench's AgentPolicies that notes
// when each one was first seen.
type watchFloor struct {
	mu    sync.Mutex
	added map[string]time.Time // guarded by mu
	kick  chan struct{}        // cap 1
}

// startWatchFloor runs the informer until stop is called; stop returns
// after the informer's goroutines ended.
func startWatchFloor(ctx context.Context, dyn dynamic.Interface) (w *watchFloor, stop func(), err error) {
	w = &watchFloor{added: map[string]time.Time{}, kick: make(chan struct{}, 1)}
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 0, benchNS, nil)
	inf := f.ForResource(policyGVR).Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: w.add}); err != nil {
		return nil, nil, fmt.Errorf("policy informer: %w", err)
	}
	ictx, cancel := context.WithCancel(ctx)
	stop = func() { cancel(); f.Shutdown() }
	f.Start(ictx.Done())
	if !cache.WaitForCacheSync(ictx.Done(), inf.HasSynced) {
		stop()
		return nil, nil, errors.New("policy informer did not sync")
	}
	return w, stop, nil
}

func (w *watchFloor) add(obj any) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	now := time.Now()
	w.mu.Lock()
	if _, dup := w.added[u.GetName()]; !dup {
		w.added[u.GetName()] = now
	}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// wait returns when name was first seen, waiting for it if need be.
func (w *watchFloor) wait(ctx context.Context, name string) (time.Time, error) {
	for {
		w.mu.Lock()
		t, ok := w.added[name]
		w.mu.Unlock()
		if ok {
			return t, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, context.Cause(ctx)
		case <-w.kick:
		case <-time.After(100 * time.Millisecond):
		}
	}
}
