package kubecp

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// pollEvery is how often Start checks on the components.
const pollEvery = 200 * time.Millisecond

// waitReady waits until the apiserver's /readyz answers ok.
func (c *ControlPlane) waitReady(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	var last error
	err = c.poll(ctx, "apiserver ready", func() bool {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, last = cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		return last == nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("%w (last: %v)", err, last)
	}
	return err
}

// waitDefaultServiceAccount waits until kube-controller-manager has made
// the "default" ServiceAccount in namespace "default".
func (c *ControlPlane) waitDefaultServiceAccount(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	var last error
	err = c.poll(ctx, "default service account", func() bool {
		_, last = cs.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		return last == nil
	})
	if err != nil && last != nil && !apierrors.IsNotFound(last) {
		return fmt.Errorf("%w (last: %v)", err, last)
	}
	return err
}

// poll calls ok every pollEvery until it returns true, ctx ends, or one of
// the started processes exits (then the error carries its log's tail).
func (c *ControlPlane) poll(ctx context.Context, what string, ok func() bool) error {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for !ok() {
		if p := c.exited(); p != nil {
			return fmt.Errorf("wait for %s: %s exited:\n%s", what, p.name, p.logTail())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
	c.log.Info("ready", "what", what)
	return nil
}

// exited returns a started process that is no longer running, if any.
func (c *ControlPlane) exited() *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if !p.alive() {
			return p
		}
	}
	return nil
}

// Check returns an error naming a component that is no longer running,
// with the end of its log, or nil while all of them run (after Stop it
// always reports one).
func (c *ControlPlane) Check() error {
	if p := c.exited(); p != nil {
		return fmt.Errorf("%s exited:\n%s", p.name, p.logTail())
	}
	return nil
}
