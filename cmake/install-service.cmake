# install-service.cmake -- installs tether.service and /etc/tether/tether.ini, run by `cmake --install` (and
# `make install`). It runs at install time so that a --prefix given then is honoured like one given to cmake:
# the unit and the configuration are written for /usr (contrib/), and get the installed paths substituted.
# SYSCONFDIR is /etc for the prefix /usr (as GNUInstallDirs has it) and PREFIX/etc otherwise; the unit goes to
# /lib/systemd/system for /usr (Debian 12) and PREFIX/lib/systemd/system otherwise (systemd reads
# /usr/local/lib/systemd/system too), unless TT_SYSTEMD_UNITDIR was set. An existing tether.ini is the
# administrator's: it is kept, and a different new one is put beside it as tether.ini.new.
# In: TT_SOURCE_DIR, TT_BINDIR, TT_DATADIR, TT_DOCDIR (relative to the prefix), TT_SYSTEMD_UNITDIR (maybe empty).
set(prefix "${CMAKE_INSTALL_PREFIX}")
if(prefix STREQUAL "/usr")
  set(confdir /etc/tether)
  set(unitdir /lib/systemd/system)
else()
  set(confdir "${prefix}/etc/tether")
  set(unitdir "${prefix}/lib/systemd/system")
endif()
if(TT_SYSTEMD_UNITDIR)
  set(unitdir "${TT_SYSTEMD_UNITDIR}")
endif()

function(tt_substitute src out)
  file(READ "${src}" text)
  string(REPLACE "/usr/bin/tether" "${prefix}/${TT_BINDIR}/tether" text "${text}")
  string(REPLACE "/usr/share/tether/site" "${prefix}/${TT_DATADIR}/tether/site" text "${text}")
  string(REPLACE "/usr/share/doc/tether/" "${prefix}/${TT_DOCDIR}/" text "${text}")
  string(REPLACE "/etc/tether/" "${confdir}/" text "${text}")
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

function(tt_put path text)
  message(STATUS "Installing: $ENV{DESTDIR}${path}")
  file(WRITE "$ENV{DESTDIR}${path}" "${text}")
  list(APPEND CMAKE_INSTALL_MANIFEST_FILES "$ENV{DESTDIR}${path}")
  set(CMAKE_INSTALL_MANIFEST_FILES "${CMAKE_INSTALL_MANIFEST_FILES}" PARENT_SCOPE)
endfunction()

tt_substitute("${TT_SOURCE_DIR}/contrib/tether.service" unit)
tt_put("${unitdir}/tether.service" "${unit}")

tt_substitute("${TT_SOURCE_DIR}/contrib/tether.ini" ini)
set(dst "$ENV{DESTDIR}${confdir}/tether.ini")
if(EXISTS "${dst}")
  file(READ "${dst}" old)
  if(old STREQUAL ini)
    message(STATUS "Up-to-date: ${dst}")
  else()
    message(STATUS "Keeping: ${dst} (yours)")
    tt_put("${confdir}/tether.ini.new" "${ini}")
  endif()
else()
  tt_put("${confdir}/tether.ini" "${ini}")
endif()
