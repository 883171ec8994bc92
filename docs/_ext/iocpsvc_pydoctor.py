"""
The pydoctor system that builds the API reference (C{--system-class} in
C{docs/conf.py}): pydoctor's own, with two mends.

Names re-exported by a package are resolved where they were defined.
pydoctor documents a name that a package imports and lists in C{__all__}
(C{iocpsvc.ConnectionContext}, from C{iocpsvc.context}) in that package, and
then looks up the names its signature and annotations use in the package
rather than in the module that defines it (pydoctor issue 295): the
C{Protocol} that C{ConnectionContext} extends, or the C{Failure} a method
takes, would be left without a link.  Here a package that received such
names also looks, for a name it does not define itself, in the modules they
came from.

One message is dropped.  C{iocpsvc.monitor} loads its public names on
first use, from a module C{__getattr__} over its C{_LAZY} table, so that a
server without a monitor never imports C{twisted.web}; its C{__all__} is
computed from that table.  pydoctor reads the source without importing it,
so it reports that it cannot parse that C{__all__}.  Nothing is lost: the
names are documented in C{iocpsvc.monitor.web} and C{iocpsvc.monitor.site},
where they are defined.  Every other message stays, and fails the docs
build (C{sphinx -W}).
"""

from __future__ import annotations

import os
from typing import Any

from pydoctor import extensions, model

LAZY_ALL = os.path.join("iocpsvc", "monitor", "__init__.py") + ":"
LAZY_ALL_MESSAGE = 'Cannot parse value assigned to "__all__"'


class RemembersWhereDefined(extensions.ClassMixin, extensions.FunctionMixin, extensions.AttributeMixin):
    """Tells the module it is moved into which module it was defined in."""

    def reparent(self, new_parent: Any, new_name: str) -> None:
        origin = self.parentMod  # type: ignore[attr-defined]
        super().reparent(new_parent, new_name)  # type: ignore[misc]
        origins = new_parent.__dict__.setdefault("reexportedFrom", [])
        if origin is not None and origin is not new_parent and origin not in origins:
            origins.append(origin)


class LooksWhereDefined(extensions.ModuleMixin, extensions.PackageMixin):
    """A name this module does not define is looked up in the modules its re-exports came from."""

    def _origin(self, name: str) -> Any:
        for origin in self.__dict__.get("reexportedFrom", ()):
            if model.CanContainImportsDocumentable.isNameDefined(origin, name):
                return origin
        return None

    def isNameDefined(self, name: str) -> bool:
        return super().isNameDefined(name) or self._origin(name) is not None  # type: ignore[misc]

    def _localNameToFullName(self, name: str) -> str:
        if not super().isNameDefined(name):  # type: ignore[misc]
            origin = self._origin(name)
            if origin is not None:
                return model.Module._localNameToFullName(origin, name)
        return super()._localNameToFullName(name)  # type: ignore[misc]


def setup_pydoctor_extension(r: extensions.ExtRegistrar) -> None:
    r.register_mixin(RemembersWhereDefined, LooksWhereDefined)


class IocpsvcSystem(model.System):
    custom_extensions = [__name__]

    def msg(self, section: str, msg: str, *args: Any, **kwargs: Any) -> None:
        if section == "all" and LAZY_ALL in msg and msg.endswith(LAZY_ALL_MESSAGE):
            return
        super().msg(section, msg, *args, **kwargs)
