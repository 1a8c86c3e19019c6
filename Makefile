# Front door: the README's commands. The build itself is CMake (build/).
BUILD ?= build
JOBS ?= $(shell nproc)
RUN ?= run
NAME ?= demo
SIZE ?= 10G
NODES ?= 3
COPIES ?= 3

.PHONY: all deps build demo stop test bench clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

demo: build
	@scripts/demo.sh start $(RUN) $(BUILD) $(NAME) $(SIZE) $(NODES) $(COPIES)

stop:
	@scripts/demo.sh stop $(RUN) $(BUILD)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j 1 --timeout 900

bench: build
	@bench/run.sh $(BUILD)
	@bench/lifecycle_bench.sh $(BUILD)
	@bench/recovery_bench.sh $(BUILD)
	@bench/zk_scale_bench.sh $(BUILD)

clean:
	rm -rf $(BUILD)
