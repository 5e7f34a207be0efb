# Makefile -- the commands a newcomer types; everything else is CMake + CTest.
#   make run      install what is missing, build, serve examples/site on http://127.0.0.1:8080
#   make test     install, then a normal and an ASan+UBSan build, each running every test; a TSan build
#                 running the multi-worker tests; fuzz briefly
#   make install  build and install tether, its man pages, systemd unit, /usr/local/etc/tether/tether.ini and
#                 example site under PREFIX (default /usr/local; PREFIX=/usr puts the config in /etc/tether);
#                 DESTDIR=DIR stages it all under DIR
#   make deb      build the Debian package (dpkg-buildpackage, debian/) into build/deb/tether_VERSION_ARCH.deb:
#                 sudo dpkg -i build/deb/tether_*.deb && sudo systemctl start tether
#   make fuzz     run the fuzzers (FUZZ_SECONDS each, default 300)
#   make bench    every benchmark against nginx, h2o, HAProxy and wrk (bench/README.md; about 30 minutes, 15 of them bench/race.sh)

BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc)
PREFIX     ?= /usr/local
FUZZ_SECONDS ?= 300
CI_FUZZ_SECONDS ?= 30
CI_PARSER_FUZZ_SECONDS ?= 60
CI_WORKER_FUZZ_SECONDS ?= 120

.PHONY: all deps build run test test-normal test-asan test-tsan fuzz fuzz-build fuzz-ci install deb bench format format-check clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/tether serve --root examples/site --listen 127.0.0.1:8080

test: deps format-check test-normal test-asan test-tsan fuzz-ci

test-normal: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DTT_ASAN=ON -DTT_UBSAN=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -j $(JOBS)

# ThreadSanitizer on the tests labelled multiworker (tests/CMakeLists.txt): several workers, reloads, the
# metrics scraper, bench threads. TSan's shadow memory needs the classic address layout: kernels with more
# mmap randomisation than it knows make it die with "unexpected memory mapping", so the tests run with ASLR
# off for these processes (setarch -R), when the system allows it.
NO_ASLR ?= $(shell setarch $$(uname -m) -R true 2>/dev/null && echo setarch $$(uname -m) -R)
test-tsan:
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTT_TSAN=ON
	cmake --build $(TSAN_BUILD) -j $(JOBS)
	cd $(TSAN_BUILD) && $(NO_ASLR) ctest --output-on-failure -j $(JOBS) -L multiworker

fuzz-build:
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DTT_FUZZ=ON
	cmake --build $(FUZZ_BUILD) -j $(JOBS)

# Each fuzzer starts from its committed corpus (read-only) and writes new inputs to a scratch dir.
fuzz-ci: fuzz-build
	scripts/run-fuzzers.sh $(FUZZ_BUILD) $(CI_FUZZ_SECONDS) $(CI_PARSER_FUZZ_SECONDS) $(CI_WORKER_FUZZ_SECONDS)

fuzz: fuzz-build
	scripts/run-fuzzers.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

install: build
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix $(PREFIX)

# dpkg-buildpackage writes its results next to the source tree, so it builds a copy of the tree (without build
# directories and .git) in $(DEB_WORK), and the .deb files are copied to $(DEB_DIR).
DEB_DIR  ?= build/deb
DEB_WORK ?= build/deb-work
deb: deps
	rm -rf $(DEB_WORK) && mkdir -p $(DEB_WORK)/tether $(DEB_DIR)
	tar -c --exclude=./.git --exclude='./build' --exclude='./build-*' --exclude='__pycache__' . | tar -x -C $(DEB_WORK)/tether
	cd $(DEB_WORK)/tether && dpkg-buildpackage -us -uc -b -j$(JOBS)
	rm -f $(DEB_DIR)/tether_*.deb $(DEB_DIR)/tether-dbgsym_*.deb
	cp $(DEB_WORK)/*.deb $(DEB_WORK)/*.buildinfo $(DEB_WORK)/*.changes $(DEB_DIR)/
	@ls -1 $(DEB_DIR)/*.deb

bench: build
	bench/static.sh
	bench/proxy.sh
	bench/tunnel.sh
	bench/race.sh
	bench/h2.sh
	bench/h2-upstream.sh
	bench/instructions.sh
	bench/tls.sh
	bench/bench-vs-wrk.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
