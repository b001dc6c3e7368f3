# Thin wrapper over CMake. `make run` and `make test` install what is missing first.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
DATA ?= /usr/share/datasets/fashion-mnist
EPOCHS ?= 3

.PHONY: deps configure build run test test-torch2 test-faults test-sanitize fuzz bench clean

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

NPROC ?= 2
# The main job: the MNIST DNN on the embedded Fashion-MNIST as a 2-rank data-parallel run
# (global batch 64 = 2 x 32, as the 1-process sample's batch 64), writing ./outputs.
run: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS) --target ctrain-launch ctrain-mnist  # only what it runs
	$(BUILD_DIR)/bin/ctrain-launch --nproc-per-node $(NPROC) $(BUILD_DIR)/bin/ctrain-mnist \
	  --data-folder $(DATA) --epochs $(EPOCHS) --batch-size $$((64 / $(NPROC))) --output-dir outputs

# onnxruntime and TensorBoard's reader check the exported files: they come with the wheel's
# environment (scripts/install-torch-wheel.sh), the parity peers stay Debian's PyTorch 1.13.
test: build
	@bash scripts/install-torch-wheel.sh
	@cd $(BUILD_DIR) && CTRAIN_CHECKER_PYTHON="$$(bash ../scripts/install-torch-wheel.sh --python)" \
	  ctest --output-on-failure -j $(JOBS)

# The GPU node's build, on this machine (build-torch2/): LibTorch from the PyTorch 2.11 wheel
# (CUDA 13.0, installed once per machine by scripts/install-torch-wheel.sh), CUDA on, OpenCV
# off as on the node. Every library, program and test compiles and links against it, and the
# suite runs on the CPU, the parity tests against the same PyTorch 2.11 (CTRAIN_TEST_PYTHON).
TORCH2_BUILD ?= build-torch2
test-torch2: deps
	@bash scripts/install-torch-wheel.sh
	@cmake -S . -B $(TORCH2_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DCTRAIN_WITH_OPENCV=OFF \
	  -DCMAKE_PREFIX_PATH="$$(bash scripts/install-torch-wheel.sh --torch-dir)" \
	  -DCUDAToolkit_ROOT=/usr/local/cuda -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc -DTORCH_CUDA_ARCH_LIST=9.0 >/dev/null
	@cmake --build $(TORCH2_BUILD) -j $(JOBS)
	@cd $(TORCH2_BUILD) && CTRAIN_TEST_PYTHON="$$(bash ../scripts/install-torch-wheel.sh --python)" \
	  ctest --output-on-failure -j $(JOBS) $(TORCH2_CTEST_ARGS)

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
