package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// jsonDecoders returns the stream (envelope) and object decoders of a
// negotiated serializer, as a watch uses them.
func jsonDecoders(t *testing.T, ns runtime.NegotiatedSerializer) (envelope, obj runtime.Decoder) {
	t.Helper()
	for _, info := range ns.SupportedMediaTypes() {
		if info.MediaType == runtime.ContentTypeJSON {
			return info.StreamSerializer.Serializer, info.Serializer
		}
	}
	t.Fatal("no JSON serializer")
	return nil, nil
}

// decodeEvent decodes one watch frame the way client-go's watch decoder does.
func decodeEvent(envelope, obj runtime.Decoder, frame []byte) (string, runtime.Object, error) {
	var ev metav1.WatchEvent
	res, _, err := envelope.Decode(frame, nil, &ev)
	if err != nil {
		return "", nil, err
	}
	if res != &ev {
		return "", nil, fmt.Errorf("decoded into %T", res)
	}
	o, _, err := obj.Decode(ev.Object.Raw, nil, nil)
	return ev.Type, o, err
}

const configMapJSON = `{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a","namespace":"n","uid":"u","resourceVersion":"7","labels":{"app":"x"}},"data":{"k":"line \"one\"\nline two","n":"1"},"binaryData":null}`

func TestLeanDecoderMatchesTheStockOne(t *testing.T) {
	stock := dynamic.ConfigFor(&rest.Config{}).NegotiatedSerializer
	stockEnv, stockObj := jsonDecoders(t, stock)
	leanEnv, leanObj := jsonDecoders(t, leanJSON{stock})

	frames := []string{
		`{"type":"ADDED","object":` + configMapJSON + `}`,
		`{"type":"MODIFIED","object":` + configMapJSON + "}\n",
		`{"type":"DELETED","object":` + configMapJSON + `}`,
		`{"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"9","annotations":{"k8s.io/initial-events-end":"true"}}}}`,
		// Watch errors decode to a typed Status, which the reflector reads.
		`{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version","reason":"Expired","code":410}}`,
		// Shapes the fast path does not take: the stock decoder does.
		`{"object":` + configMapJSON + `,"type":"ADDED"}`,
		`{"type":"ADDED","object":` + configMapJSON + `,"extra":1}`,
		`{"type":"ADDED", "object":` + configMapJSON + `}`,
	}
	for _, frame := range frames {
		wantType, want, wantErr := decodeEvent(stockEnv, stockObj, []byte(frame))
		gotType, got, gotErr := decodeEvent(leanEnv, leanObj, []byte(frame))
		if (wantErr != nil) != (gotErr != nil) {
			t.Errorf("%s\nerror %v, stock decoder: %v", frame, gotErr, wantErr)
			continue
		}
		if gotType != wantType || !reflect.DeepEqual(got, want) {
			t.Errorf("%s\ndecoded %s %#v\nstock   %s %#v", frame, gotType, got, wantType, want)
		}
	}

	// The error event is a typed Status, as the stock decoder makes it.
	_, status, err := decodeEvent(leanEnv, leanObj, []byte(frames[4]))
	if s, ok := status.(*metav1.Status); err != nil || !ok || s.Code != 410 {
		t.Errorf("error event decoded to %T %v", status, err)
	}
	// Malformed objects fail as they do with the stock decoder.
	if _, _, err := decodeEvent(leanEnv, leanObj, []byte(`{"type":"ADDED","object":{"kind":"ConfigMap",}}`)); err == nil {
		t.Error("malformed object decoded")
	}
}

func TestSplitEnvelope(t *testing.T) {
	for frame, want := range map[string]bool{
		`{"type":"ADDED","object":{}}`:               true,
		` {"type":"ERROR","object":{"a":1}} ` + "\n": true,
		`{"type":"OTHER","object":{}}`:               false,
		`{"type":"ADDED","object":[]}`:               false,
		`{"type":"ADDED","object":{},"x":1}`:         false,
		`{"type":"ADDED"}`:                           false,
		`{"type":"ADDED","object":{}`:                false,
	} {
		if _, _, ok := splitEnvelope([]byte(frame)); ok != want {
			t.Errorf("splitEnvelope(%s) ok=%v, want %v", frame, ok, want)
		}
	}
}

// BenchmarkWatchDecode compares the lean decoder with the stock one on a
// ConfigMap event of ~2 KiB.
func BenchmarkWatchDecode(b *testing.B) {
	data := make([]byte, 0, 2048)
	for len(data) < 1800 {
		data = fmt.Appendf(data, "server.pool.max=%d\\n", len(data))
	}
	frame := []byte(`{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a","namespace":"n","uid":"u","resourceVersion":"7"},"data":{"application.properties":"` + string(data) + `"}}}`)
	stock := dynamic.ConfigFor(&rest.Config{}).NegotiatedSerializer
	for _, tc := range []struct {
		name string
		ns   runtime.NegotiatedSerializer
	}{{"stock", stock}, {"lean", leanJSON{stock}}} {
		b.Run(tc.name, func(b *testing.B) {
			var envelope, obj runtime.Decoder
			for _, info := range tc.ns.SupportedMediaTypes() {
				if info.MediaType == runtime.ContentTypeJSON {
					envelope, obj = info.StreamSerializer.Serializer, info.Serializer
				}
			}
			b.SetBytes(int64(len(frame)))
			for range b.N {
				if _, _, err := decodeEvent(envelope, obj, frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// frames reads every frame of a stream through framer with a streaming
// decoder's buffer of size bufSize (growing it on io.ErrShortBuffer, as
// client-go's does).
func frames(t *testing.T, framer runtime.Framer, stream string, bufSize int) []string {
	t.Helper()
	out, err := readFrames(framer, []byte(stream), bufSize)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// stockJSONFramer is the dynamic client's own framer of JSON streams.
func stockJSONFramer() runtime.Framer {
	for _, info := range dynamic.ConfigFor(&rest.Config{}).NegotiatedSerializer.SupportedMediaTypes() {
		if info.MediaType == runtime.ContentTypeJSON {
			return info.StreamSerializer.Framer
		}
	}
	return nil
}

func TestLineFramerMatchesTheStockOne(t *testing.T) {
	stockFramer := stockJSONFramer()
	lean := lineFramer{stockFramer}
	event := func(name string, size int) string {
		return `{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"` + name + `"},"data":{"k":"` + strings.Repeat("x", size) + `\nnext"}}}`
	}
	for name, stream := range map[string]string{
		"events as the API server writes them":            event("a", 10) + "\n" + event("b", 100) + "\n",
		"a line longer than the read buffer":              event("a", 10) + "\n" + event("big", 100<<10) + "\n" + event("c", 1) + "\n",
		"blank lines and a last line without its newline": "\n" + event("a", 10) + "\r\n\n" + event("b", 3),
		// Not one object per line: the stock framer takes over.
		"pretty-printed": "{\n  \"type\": \"ADDED\",\n  \"object\": {\"kind\": \"ConfigMap\"}\n}\n" + event("b", 3) + "\n",
	} {
		for _, bufSize := range []int{16, 1 << 10, 64 << 10} {
			want := frames(t, stockFramer, stream, bufSize)
			got := frames(t, lean, stream, bufSize)
			for i := range want {
				// The stock framer keeps an object's inner layout; both
				// give the same JSON values.
				var w, g any
				if i >= len(got) || json.Unmarshal([]byte(want[i]), &w) != nil || json.Unmarshal([]byte(got[i]), &g) != nil || !reflect.DeepEqual(w, g) {
					t.Fatalf("%s, buffer %d: frames\n%q\nwant\n%q", name, bufSize, got, want)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("%s, buffer %d: %d frames, want %d", name, bufSize, len(got), len(want))
			}
		}
	}
}

// TestDecodedObjectsOwnTheirBytes: the envelope decoder hands the object's
// bytes over without a copy, and the stream reuses its buffer for the next
// frame, so a decoded object must hold nothing of the frame it came from.
func TestDecodedObjectsOwnTheirBytes(t *testing.T) {
	stock := dynamic.ConfigFor(&rest.Config{}).NegotiatedSerializer
	stockEnv, stockObj := jsonDecoders(t, stock)
	leanEnv, leanObj := jsonDecoders(t, leanJSON{stock})
	escaped := strings.Replace(configMapJSON, `"n":"1"`, `"n":"\u00e9\ud83d\ude00 \\ \/ \t","big":12345678901234567890`, 1)
	for _, obj := range []string{configMapJSON, escaped} {
		frame := []byte(`{"type":"ADDED","object":` + obj + `}`)
		_, want, err := decodeEvent(stockEnv, stockObj, bytes.Clone(frame))
		if err != nil {
			t.Fatal(err)
		}
		_, got, err := decodeEvent(leanEnv, leanObj, frame)
		if err != nil {
			t.Fatal(err)
		}
		for i := range frame {
			frame[i] = 'x' // the next frame
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("after the buffer was reused:\n%#v\nwant %#v", got, want)
		}
	}
}

// FuzzLineFramer is the differential test of the line framer: a stream of
// JSON objects written one per line, as the API server writes watch
// events (each line compact, blank lines and CRLF allowed), splits into the
// same frames as the stock framer makes of it, at every buffer size. The
// fuzzer supplies the objects, one per input line; lines that are not
// one JSON object are left out of the stream. Any other stream may frame
// differently but never panics.
func FuzzLineFramer(f *testing.F) {
	for _, seed := range []string{
		`{"type":"ADDED","object":{"kind":"ConfigMap","data":{"k":"a\nb"}}}` + "\n" + `{"type":"DELETED","object":{}}`,
		"{\"a\": [1, 2,\t3]}\r\n\n{\"b\":\"}\"}\n",
		"{}\n{}\n{}",
	} {
		f.Add([]byte(seed), uint16(16))
	}
	stockFramer := stockJSONFramer()
	lean := lineFramer{stockFramer}
	f.Fuzz(func(t *testing.T, input []byte, bufSize uint16) {
		size := 1 + int(bufSize)%(128<<10)
		_, _ = readFrames(lean, input, size) // anything: no panic
		var stream bytes.Buffer
		for i, line := range bytes.Split(input, []byte("\n")) {
			var v map[string]any
			var compact bytes.Buffer
			if json.Unmarshal(line, &v) != nil || json.Compact(&compact, line) != nil {
				continue
			}
			stream.Write(compact.Bytes())
			stream.WriteString([]string{"\n", "\r\n", "\n\n"}[i%3])
		}
		want, wantErr := readFrames(stockFramer, stream.Bytes(), size)
		got, err := readFrames(lean, stream.Bytes(), size)
		if (err != nil) != (wantErr != nil) || len(got) != len(want) {
			t.Fatalf("%q: %d frames (%v), stock %d (%v)", stream.Bytes(), len(got), err, len(want), wantErr)
		}
		for i := range want {
			var w, g any
			if json.Unmarshal([]byte(want[i]), &w) != nil || json.Unmarshal([]byte(got[i]), &g) != nil || !reflect.DeepEqual(w, g) {
				t.Fatalf("%q: frame %d %q, stock %q", stream.Bytes(), i, got[i], want[i])
			}
		}
	})
}

// readFrames is frames without a test to fail: the frames read and the
// error that ended them, other than io.EOF.
func readFrames(framer runtime.Framer, stream []byte, bufSize int) ([]string, error) {
	r := framer.NewFrameReader(io.NopCloser(bytes.NewReader(stream)))
	defer r.Close()
	var out []string
	buf := make([]byte, bufSize)
	for {
		base := 0
		for {
			n, err := r.Read(buf[base:])
			if errors.Is(err, io.ErrShortBuffer) {
				base += n
				if len(buf) > 8*len(stream)+1024 {
					return out, fmt.Errorf("a frame longer than the stream: %w", err)
				}
				buf = append(buf, make([]byte, len(buf))...)
				continue
			}
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			if err != nil {
				return out, err
			}
			base += n
			break
		}
		out = append(out, string(buf[:base]))
	}
}

// BenchmarkFramer compares the line framer with the stock one on a watch
// stream of 2 KiB ConfigMap events, as the informers read it.
func BenchmarkFramer(b *testing.B) {
	var stream bytes.Buffer
	value := strings.Repeat("k=v\n", 480)
	for i := range 1000 {
		ev := map[string]any{"type": "MODIFIED", "object": map[string]any{
			"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": fmt.Sprintf("cm-%06d", i), "namespace": "bench", "resourceVersion": fmt.Sprint(1000 + i)},
			"data":     map[string]any{"app.properties": value},
		}}
		line, _ := json.Marshal(ev)
		stream.Write(line)
		stream.WriteByte('\n')
	}
	stock := stockJSONFramer()
	for _, tc := range []struct {
		name   string
		framer runtime.Framer
	}{{"line", lineFramer{stock}}, {"stock", stock}} {
		b.Run(tc.name, func(b *testing.B) {
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(stream.Len()))
			for b.Loop() {
				r := tc.framer.NewFrameReader(io.NopCloser(bytes.NewReader(stream.Bytes())))
				for {
					if _, err := r.Read(buf); err != nil && !errors.Is(err, io.ErrShortBuffer) {
						break
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000/1000, "us/event")
		})
	}
}
