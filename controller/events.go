package controller

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// eventSource is the component of the events the controller records.
const eventSource = "agentmesh-controller"

// newRecorder records core/v1 Events through client (create, and patch to
// count repeats); stop flushes nothing and ends its goroutines.
func newRecorder(client kubernetes.Interface) (rec record.EventRecorder, stop func(), err error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, nil, err
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		return nil, nil, err
	}
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	return b.NewRecorder(s, corev1.EventSource{Component: eventSource}), b.Shutdown, nil
}
