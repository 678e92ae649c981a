# Debian packages the build needs, installed when missing: shared by the top-level Makefile
# and guest/linux/Makefile.
#
# $(call install-missing,CHECKS,NOTE) looks at each CHECK and installs the packages whose
# check fails. A CHECK is one of
#   cmd:PACKAGE     the command must be on PATH
#   /path:PACKAGE   the file must exist
#   =PACKAGE        the package itself must be installed (dpkg), e.g. busybox-static, whose
#                   /bin/busybox the dynamic busybox package also provides
# As root the packages are installed with apt-get (after apt-get update if the first try
# fails). Without root: with no NOTE, the command to run is printed and make stops; with a
# NOTE, the NOTE is printed and make goes on (for optional tools).
define install-missing
missing=""; for check in $(1); do \
  case $$check in \
    =*) pkg=$${check#=}; dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg";; \
    /*) what=$${check%%:*}; [ -e $$what ] || missing="$$missing $${check#*:}";; \
    *) what=$${check%%:*}; command -v $$what >/dev/null 2>&1 || missing="$$missing $${check#*:}";; \
  esac; \
done; \
if [ -n "$$missing" ]; then \
  if [ "$$(id -u)" = 0 ]; then \
    echo "installing:$$missing"; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing \
      || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; }; \
  elif [ -n "$(2)" ]; then \
    echo "missing:$$missing (sudo apt-get install$$missing): $(2)"; \
  else \
    echo "missing packages:$$missing (run: sudo apt-get install$$missing)"; exit 1; \
  fi; \
fi
endef
