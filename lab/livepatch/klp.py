"""klp - upstream's live patching API as the lab's core sees it: struct
klp_patch read from the guest (klp_init_patch()), the hypercalls of the
guest's klp core (firmware/livepatch.c), and the requests the lab makes of
the kernel as a shell would: insmod, rmmod, `echo VALUE > FILE`, `cat FILE`.

The guest keeps upstream's bookkeeping (klp_patches, klp_transition_patch,
callbacks, states, sysfs); this side does what ftrace and the transition
code do for it, through the same core that serves kGraft's patches.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import GuestFault
from .patch import PatchDescription, PatchFunc, PatchState

ENOENT, EAGAIN, ENOMEM, EACCES, EFAULT, EBUSY, EEXIST, ENODEV, EINVAL = 2, 11, 12, 13, 14, 16, 17, 19, 22
KSYM_NAME_LEN = 128
MAX_OBJECTS = 16
MAX_FUNCS = 64

# errno names as strerror() words them: modprobe's "could not insert" line
STRERROR = {1: "Operation not permitted", 5: "Input/output error", 8: "Exec format error", 2: "No such file or directory", 11: "Resource temporarily unavailable",
            12: "Cannot allocate memory", 13: "Permission denied", 14: "Bad address",
            16: "Device or resource busy", 17: "File exists", 19: "No such device", 22: "Invalid argument"}

REQ_RMMOD, REQ_WRITE, REQ_READ, REQ_STAT, REQ_SPAWN = 1, 2, 3, 4, 5
REQUEST_NAMES = {REQ_RMMOD: "rmmod", REQ_WRITE: "echo", REQ_READ: "cat", REQ_STAT: "stat", REQ_SPAWN: "sh"}
REQ_PATH, REQ_BUF, REQ_SIZE = 24, 24 + 96, 24 + 96 + 128     # struct lab_request (firmware/module.c)


class KlpRefusal(Exception):
    def __init__(self, errno, message):
        self.errno = errno
        super().__init__(message)


@dataclass
class Request:
    """One request of the lab to kmodloader, answered by HC_REQUEST_DONE."""

    kind: int
    path: str = ""
    value: str = ""
    module: object = None
    done: bool = False
    result: int | None = None
    text: str = ""


class Klp:
    """The lab's side of the guest's klp core, owned by a Livepatch."""

    def __init__(self, livepatch):
        self.lp = livepatch
        self.kernel = livepatch.kernel
        self.machine = livepatch.machine
        self.image = livepatch.image
        self.request = None      # the Request kmodloader is working on
        self.completing = None   # the transition whose completion the guest runs
        # The handlers reach this object through the core: a snapshot's
        # restore gives the core a fresh copy of it (lab.snapshot), and the
        # engine's table must call that one, not the one booted with.
        def route(method):
            return lambda a, b, c: getattr(livepatch.klp, method)(a, b, c)
        for name, method in (("KLP_INIT", "_hc_init"), ("KLP_START", "_hc_start"), ("KLP_REVERSE", "_hc_reverse"),
                             ("KLP_FORCE", "_hc_force"), ("KLP_DONE", "_hc_done"), ("KLP_FREE", "_hc_free"),
                             ("REQUEST_DONE", "_hc_request_done"), ("KLP_OBJECT", "_hc_object")):
            self.kernel.on_hypercall(name, route(method))

    def c(self, name):
        return self.kernel.c[name]

    # ---- reading the guest's structures ----
    def _u64(self, address, what):
        if not self.machine.guest_range_ok(address, 8):
            raise KlpRefusal(EFAULT, f"{what} at {address:#x} lies outside the kernel's memory")
        return self.machine.u64(address)

    def _string(self, address, what):
        text = self.machine.guest_cstring(address, KSYM_NAME_LEN)
        if text is None:
            raise KlpRefusal(EINVAL, f"{what} ({address:#x}) is not a string of fewer than {KSYM_NAME_LEN} "
                                     "bytes in the kernel's memory")
        return text

    def _resolve(self, patch, obj_name, name, sympos):
        """klp_find_object_symbol(): the function's fentry pad, by name and
        position among functions of that name, with upstream's messages."""
        if obj_name is not None:
            return self._resolve_in_module(patch, obj_name, name, sympos)
        matches = sorted((s for s in self.image.symbols if s.name == name and s.kind == "func"),
                         key=lambda s: s.address)
        if not matches:
            raise KlpRefusal(EINVAL, f"symbol '{name}' not found in symbol table")
        if sympos == 0 and len(matches) > 1:
            raise KlpRefusal(EINVAL, f"unresolvable ambiguity for symbol '{name}' in object 'vmlinux'")
        if sympos > len(matches):
            raise KlpRefusal(EINVAL, f"symbol position {sympos} for symbol '{name}' in object 'vmlinux' "
                                     "not found")
        sym = matches[max(sympos, 1) - 1]
        pad = next((p for p in self.image.pads if p.address == sym.address), None)
        if pad is None:
            raise KlpRefusal(EINVAL, f"failed to find location for function '{name}'")
        return sym, pad

    def _target_module(self, obj_name):
        return next((m for m in self.lp.modules.modules if m.loaded and m.name == obj_name
                     and m.this_module is not None), None)

    def _resolve_in_module(self, patch, obj_name, name, sympos):
        target = self._target_module(obj_name)
        if target is None:
            raise KlpRefusal(EINVAL, f"module '{obj_name}' is not loaded")
        matches = sorted((s for s in target.symbols.values() if s.name == name and s.kind == "func"),
                         key=lambda s: s.address)
        if not matches:
            raise KlpRefusal(EINVAL, f"symbol '{name}' not found in symbol table")
        if sympos > len(matches):
            raise KlpRefusal(EINVAL, f"symbol position {sympos} for symbol '{name}' in object '{obj_name}' "
                                     "not found")
        sym = matches[max(sympos, 1) - 1]
        if not any(address == sym.address for address, _f in target.pads):
            raise KlpRefusal(EINVAL, f"failed to find location for function '{name}'")
        return sym, _ModulePad(sym.address)

    def _object_funcs(self, patch, rec, i, where, obj_name):
        """The resolved functions of one klp_object (its module must be loaded)."""
        module = patch.module
        fptr = self._u64(rec + self.c("KLP_OBJ_funcs"), f"{where} .objs[{i}].funcs")
        funcs = []
        for j in range(MAX_FUNCS + 1):
            frec = fptr + j * self.c("KLP_FUNC_SIZE")
            old_ptr = self._u64(frec + self.c("KLP_FUNC_old_name"), f"{where} .objs[{i}].funcs[{j}]")
            if not old_ptr:
                break
            if j == MAX_FUNCS:
                raise KlpRefusal(EINVAL, f"{where}: more than {MAX_FUNCS} functions in one object")
            old_name = self._string(old_ptr, f"{where} .objs[{i}].funcs[{j}].old_name")
            new_addr = self._u64(frec + self.c("KLP_FUNC_new_func"), f"{where} .objs[{i}].funcs[{j}]")
            sympos = self._u64(frec + self.c("KLP_FUNC_old_sympos"), f"{where} .objs[{i}].funcs[{j}]")
            if not new_addr:
                raise KlpRefusal(EINVAL, f"'{module.name}': {old_name} has no new_func")
            _sym, pad = self._resolve(patch, obj_name, old_name, sympos)
            new_fn = module.function_at(new_addr)
            if new_fn is None or new_fn.address != new_addr:
                raise KlpRefusal(EINVAL, f"'{module.name}': the new function for {old_name} ({new_addr:#x}) "
                                         f"is not the start of a function of {module.name}")
            funcs.append(PatchFunc(old_name, pad.address, new_fn.name, new_addr))
        return funcs

    def _hc_object(self, ptr, obj_ptr, on):
        """klp_module_coming()/going(): patch or unpatch one object."""
        patch = self._patch_at(ptr)
        if patch is None:
            raise GuestFault(f"a module object of {ptr:#x}, which is no registered patch")
        c = self.c
        objs = self.machine.u64(ptr + c("KLP_PATCH_objs"))
        i, rem = divmod(obj_ptr - objs, c("KLP_OBJ_SIZE"))
        if rem or not 0 <= i < MAX_OBJECTS:
            raise GuestFault(f"{obj_ptr:#x} is not an object of patch '{patch.name}'")
        name_ptr = self.machine.u64(obj_ptr + c("KLP_OBJ_name"))
        obj_name = self.machine.guest_cstring(name_ptr, KSYM_NAME_LEN) if name_ptr else None
        if obj_name is None:
            raise GuestFault(f"object {i} of patch '{patch.name}' is not a module object")
        if not on:
            if obj_name in patch.module_funcs:
                self.lp._requests.append(("obj-unpatch", (patch, obj_name)))
                self.machine.stop()
            return 0
        try:
            funcs = self._object_funcs(patch, obj_ptr, i, f"'{patch.name}': struct klp_patch", obj_name)
        except KlpRefusal as r:
            self.lp._log(str(r), level=3)
            return -r.errno
        patch.module_funcs[obj_name] = tuple(funcs)
        self.lp._requests.append(("obj-patch", (patch, obj_name)))
        self.machine.stop()
        return 0

    def read_patch(self, ptr, patch):
        """struct klp_patch, its objects and functions (klp_init_patch())."""
        module = patch.module
        where = f"'{module.name}': struct klp_patch"
        if not self.machine.guest_range_ok(ptr, self.c("KLP_PATCH_forced") + 1):
            raise KlpRefusal(EFAULT, f"{where} at {ptr:#x} lies outside the kernel's memory")
        mod = self._u64(ptr + self.c("KLP_PATCH_mod"), f"{where} .mod")
        if mod != module.this_module:
            raise KlpRefusal(EINVAL, f"{where} .mod is not THIS_MODULE of {module.name}")
        objs = self._u64(ptr + self.c("KLP_PATCH_objs"), f"{where} .objs")
        replace = bool(self.machine.u8(ptr + self.c("KLP_PATCH_replace")))
        funcs, objects, seen, module_funcs = [], [], set(), {}
        for i in range(MAX_OBJECTS + 1):
            rec = objs + i * self.c("KLP_OBJ_SIZE")
            name_ptr = self._u64(rec + self.c("KLP_OBJ_name"), f"{where} .objs[{i}].name")
            fptr = self._u64(rec + self.c("KLP_OBJ_funcs"), f"{where} .objs[{i}].funcs")
            if not name_ptr and not fptr:
                break
            if i == MAX_OBJECTS:
                raise KlpRefusal(EINVAL, f"{where}: more than {MAX_OBJECTS} objects, or no terminating {{ }}")
            obj_name = self._string(name_ptr, f"{where} .objs[{i}].name") if name_ptr else None
            objects.append(obj_name or "vmlinux")
            if obj_name is not None:
                # a module object: patched now if its module is loaded, else
                # when it loads (klp_module_coming())
                if self._target_module(obj_name) is not None:
                    mfuncs = self._object_funcs(patch, rec, i, where, obj_name)
                    if any(f.old_addr in seen for f in mfuncs):
                        raise KlpRefusal(EINVAL, f"'{module.name}': a function is patched twice in one patch")
                    seen.update(f.old_addr for f in mfuncs)
                    module_funcs[obj_name] = tuple(mfuncs)
                continue
            for j in range(MAX_FUNCS + 1):
                frec = fptr + j * self.c("KLP_FUNC_SIZE")
                old_ptr = self._u64(frec + self.c("KLP_FUNC_old_name"), f"{where} .objs[{i}].funcs[{j}]")
                if not old_ptr:
                    break
                if j == MAX_FUNCS:
                    raise KlpRefusal(EINVAL, f"{where}: more than {MAX_FUNCS} functions in one object")
                old_name = self._string(old_ptr, f"{where} .objs[{i}].funcs[{j}].old_name")
                new_addr = self._u64(frec + self.c("KLP_FUNC_new_func"), f"{where} .objs[{i}].funcs[{j}]")
                sympos = self._u64(frec + self.c("KLP_FUNC_old_sympos"), f"{where} .objs[{i}].funcs[{j}]")
                if not new_addr:
                    raise KlpRefusal(EINVAL, f"'{module.name}': {old_name} has no new_func")
                sym, pad = self._resolve(patch, obj_name, old_name, sympos)
                new_fn = module.function_at(new_addr)
                if new_fn is None or new_fn.address != new_addr:
                    raise KlpRefusal(EINVAL, f"'{module.name}': the new function for {old_name} ({new_addr:#x}) "
                                             f"is not the start of a function of {module.name}")
                if pad.address in seen:
                    raise KlpRefusal(EINVAL, f"'{module.name}': {old_name} is patched twice in one patch")
                seen.add(pad.address)
                funcs.append(PatchFunc(old_name, pad.address, new_fn.name, new_addr))
        patch.module_funcs = module_funcs
        return PatchDescription(module.name, tuple(funcs), replace, (), klp=True, objects=tuple(objects))

    # ---- hypercalls of the guest's core ----
    def _patch_at(self, ptr):
        for p in reversed(self.lp.patches):
            if p.klp_ptr == ptr and p.module.loaded:
                return p
        return None

    def _hc_init(self, ptr, _b, _c):
        lp = self.lp
        patch = lp._calling_patch(ptr)
        if patch is None or patch.module.this_module is None:
            raise GuestFault(f"klp_enable_patch({ptr:#x}) reached the core outside a module's init")
        if patch.description is not None:
            lp._log(f"'{patch.module.name}': klp_enable_patch() called again; refused", level=3)
            return -EEXIST
        try:
            if lp.busy is not None:
                raise KlpRefusal(EBUSY, f"'{patch.module.name}': refused: the transition of "
                                        f"'{lp.busy.name}' is still in progress")
            desc = self.read_patch(ptr, patch)
        except KlpRefusal as r:
            patch.reason = str(r)
            lp._log(str(r), level=3)
            return -r.errno
        patch.description = desc
        patch.klp_ptr = ptr
        patch.registered = True
        return 0

    def _hc_start(self, ptr, target, _c):
        lp = self.lp
        patch = self._patch_at(ptr)
        if patch is None or target not in (0, 1):
            raise GuestFault(f"klp_start_transition() for {ptr:#x}, which is no registered patch")
        t = lp.transition
        if t is not None and t.patch is patch:
            return 0                     # the start after klp_reverse_transition()
        if lp.busy is not None:
            return -EBUSY
        if target == 1 and patch.state == PatchState.LOADING:
            lp._requests.append(("start", patch))
        elif target == 0 and patch.state == PatchState.COMPLETE:
            lp._requests.append(("revert", patch))
        else:
            return -EINVAL
        self.machine.stop()
        return 0

    def _hc_reverse(self, ptr, _b, _c):
        t = self.lp.transition
        if t is None or t.patch is not self._patch_at(ptr):
            raise GuestFault(f"klp_reverse_transition() for {ptr:#x}, which is not in transition")
        self.lp._requests.append(("reverse", t.patch))
        self.machine.stop()

    def _hc_force(self, ptr, _b, _c):
        t = self.lp.transition
        if t is None or t.patch is not self._patch_at(ptr):
            raise GuestFault(f"klp_force_transition() for {ptr:#x}, which is not in transition")
        for p in self.lp.patches:
            if p.registered:
                p.forced = True
        self.lp._requests.append(("force", t.patch))
        self.machine.stop()

    def _hc_done(self, ptr, state, _c):
        t = self.completing
        if t is None and self.lp.model == "upstream":
            # upstream's transition work completed it in the guest itself
            t = self.lp.transition if self.lp.transition is not None and self.lp.transition.complete() else None
            self.completing = t
        if t is None or t.patch is not self._patch_at(ptr) or state != t.target:
            raise GuestFault(f"klp_complete_transition() for {ptr:#x}, whose transition the core did not end")
        self.lp._requests.append(("finish", t.patch))
        self.machine.stop()

    def _hc_free(self, ptr, _b, _c):
        patch = self._patch_at(ptr)
        if patch is not None:
            patch.registered = False

    # ---- completion: the guest runs it (post callbacks), the core finishes ----
    def complete(self, t):
        """Every task has moved: have kmodloader run klp_complete_transition()."""
        if self.completing is t:
            return
        self.completing = t
        self.machine.set_u64(self.image.address("klp_complete_request"), t.patch.klp_ptr)
        loader = self.kmodloader()
        if loader is not None:
            self.kernel.kick(loader.tid, fake_signal=False)

    def kmodloader(self):
        return next((t for t in self.kernel.tasks if t.name == "kmodloader"
                     and t.state.value not in ("dead", "unused")), None)

    # ---- requests: rmmod, echo, cat ----
    def submit(self, request):
        """Hand a request to kmodloader; one at a time, as one shell would."""
        if self.request is not None and not self.request.done:
            raise KlpBusy(f"the kernel is still doing `{REQUEST_NAMES[self.request.kind]}` "
                          f"{self.request.path or self.request.module.name}; run it a little and try again")
        loader = self.kmodloader()
        if loader is None:
            raise KlpBusy("kmodloader is not running, so the kernel cannot take requests; reboot")
        m, base = self.machine, self.image.address("lab_request")
        # struct lab_request: kind, arg, mod, path[96], buf[128]
        m.write(base, bytes(REQ_SIZE))
        m.set_u32(base, request.kind)
        if request.kind == REQ_RMMOD:
            m.set_u64(base + 8, request.module.exit or 0)
            m.set_u64(base + 16, request.module.this_module or 0)
        m.write(base + REQ_PATH, request.path.encode()[:95])
        m.write(base + REQ_BUF, request.value.encode()[:127])
        m.set_u32(self.image.address("lab_request_pending"), 1)
        self.request = request
        self.kernel.kick(loader.tid, fake_signal=False)
        return request

    def _hc_request_done(self, kind, ret, _c):
        r = self.request
        if r is None or r.done or r.kind != kind:
            raise GuestFault(f"a request of kind {kind} finished that the lab did not make")
        ret = ret - (1 << 64) if ret >= 1 << 63 else ret
        r.result = ret
        r.done = True
        if kind == REQ_READ and ret > 0:
            r.text = self.machine.cstring(self.image.address("lab_request") + REQ_BUF, 128)
        if kind == REQ_RMMOD:
            self.lp._requests.append(("rmmod-done", r.module))
            self.machine.stop()


class KlpBusy(Exception):
    pass


@dataclass(frozen=True)
class _ModulePad:
    address: int
