# Thin wrapper over CMake so the two README commands stay short.
#   make demo     install build deps, build, run the main job end to end (scripts/demo.sh)
#   make check    install test deps, build, run every test (plain, ASan+UBSan, TSan, fuzz smoke)
#   make install  install cairn, cairnd, libcairn, headers, pkg-config file, man pages
#   make bench    run bench/run (installs the peers it compares against)
PREFIX ?= /usr/local
BUILD ?= build
JOBS ?= $(shell nproc)
GEN := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")

.PHONY: all build deps demo check install bench clean format

all: build

deps:
	scripts/deps.sh build

build: deps
	cmake -S . -B $(BUILD) $(GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=$(PREFIX) -DCAIRN_TEST_HOOKS=OFF >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	scripts/demo.sh $(BUILD)

check:
	scripts/check.sh

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

bench:
	bench/run

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-*
