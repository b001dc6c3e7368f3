# Thin wrapper over CMake. `make run` and `make test` install what is missing first.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
DATA ?= /usr/share/datasets/fashion-mnist
EPOCHS ?= 3

.PHONY: deps configure build run test test-minimal test-faults test-sanitize fuzz bench clean

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

NPROC ?= 2
# The main job: the MNIST DNN on the embedded Fashion-MNIST as a 2-rank data-parallel run
# (global batch 64 = 2 x 32, as the 1-process sample's batch 64), writing ./outputs.
run: build
	$(BUILD_DIR)/bin/ctrain-launch --nproc-per-node $(NPROC) $(BUILD_DIR)/bin/ctrain-mnist \
	  --data-folder $(DATA) --epochs $(EPOCHS) --batch-size $$((64 / $(NPROC))) --output-dir outputs

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

# The build a node without OpenCV or libonnx gets (build-minimal/): the libraries, every
# program, and the tests of what differs there (data, the engine and step, the apps' CLI with
# export skipped and birds refusing images, link order). The other suites exercise the same
# code as in the full build and run there; building them here would cost CI minutes.
MINIMAL_TARGETS ?= ctrain-mnist ctrain-birds ctrain-launch ctrain-report data_test engine_test apps_test
test-minimal: deps
	@cmake -S . -B build-minimal -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DCTRAIN_WITH_OPENCV=OFF -DCTRAIN_WITH_ONNX=OFF >/dev/null
	@cmake --build build-minimal -j $(JOBS) --target $(MINIMAL_TARGETS)
	@cd build-minimal && ctest --output-on-failure -j $(JOBS) -E '_NOT_BUILT$$' 

# The fault-injection tests, one line per fault (they also run in `make test`), then every
# fuzz target for FUZZ_SECONDS (5 here) with its executions and crashes.
test-faults: build
	@FUZZ_SECONDS=$(or $(FAULTS_FUZZ_SECONDS),5) bash scripts/test-faults.sh $(BUILD_DIR)

# The whole suite under AddressSanitizer + UBSan (GCC) in build-sanitize/. LibTorch itself is
# not instrumented, so ASan's checks that need whole-program instrumentation are off.
test-sanitize: deps
	@cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCTRAIN_SANITIZE=ON >/dev/null
	@cmake --build build-sanitize -j $(JOBS)
	@cd build-sanitize && ASAN_OPTIONS=detect_leaks=0:detect_odr_violation=0:alloc_dealloc_mismatch=0:detect_container_overflow=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

# libFuzzer (clang, ASan + UBSan) on every parser of untrusted bytes, FUZZ_SECONDS each.
FUZZ_SECONDS ?= 30
fuzz: deps
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh

bench: build
	/usr/bin/python3 benchmarks/mnist_vs_pytorch.py

clean:
	rm -rf $(BUILD_DIR)
